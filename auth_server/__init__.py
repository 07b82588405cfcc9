"""The OAuth 2.0 / OpenID Connect authorization server of jwt-bff (DESIGN §1)."""
