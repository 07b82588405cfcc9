"""The plumbing the three services share: JSON logs, opening Redis, Redis failures as 503, request metrics,
settings parsing and the uvicorn runner.

Internal to this distribution: ``auth_server``, ``resource_server`` and ``bff`` import it; the verifier library
(``jwt_bff_verifier``) never does, so a resource team can lift it out alone.
"""
