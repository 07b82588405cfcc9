"""``bff check``: a configuration tested against the live world before any user meets its mistakes (DESIGN §11).

One line per check, ``PASS``, ``WARN``, ``SKIP`` or ``FAIL``; every ``FAIL`` names the setting to change, and the
command exits 1 when one failed. It asks the provider what the BFF will ask it (the same ``AuthClient``, so the
same words as the ERROR lines of ``bff serve``), the upstreams whether they answer at all, and Redis for a PONG.
Nothing is written anywhere: a PAR push leaves an unused request URI that expires, a code exchange with a code
that does not exist is refused.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx

from bff.auth_client import AuthClient, describe
from bff.errors import AuthServerUnavailable, ServerMisconfigured
from bff.settings import Settings

TIMEOUT = 5.0  # seconds for each call of a check


@dataclass(frozen=True)
class Check:
    status: str  # PASS, WARN, SKIP or FAIL
    name: str
    message: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.message}"


def _down(exc: AuthServerUnavailable) -> str:
    return exc.why or exc.description


async def _provider(settings: Settings, http: httpx.AsyncClient) -> list[Check]:
    auth = AuthClient(settings, http)
    checks: list[Check] = []
    try:
        metadata = await auth.discover()
    except ServerMisconfigured as exc:
        return [Check("FAIL", "discovery", exc.reason)]
    except AuthServerUnavailable as exc:
        return [
            Check(
                "FAIL",
                "discovery",
                f"the provider does not answer ({_down(exc)}); check BFF_ISSUER (and BFF_AUTH_INTERNAL_URL when "
                "set), or start the provider",
            )
        ]
    checks.append(Check("PASS", "discovery", f"{settings.back_channel_url} names the issuer {metadata['issuer']}"))

    try:
        keys = await auth.fetch_keys()
        checks.append(Check("PASS", "jwks", f"{len(keys)} key(s) at {metadata.get('jwks_uri')}"))
    except ServerMisconfigured as exc:
        checks.append(Check("FAIL", "jwks", exc.reason))
    except AuthServerUnavailable as exc:
        checks.append(Check("FAIL", "jwks", f"{_down(exc)}; check the provider's jwks_uri and BFF_AUTH_INTERNAL_URL"))

    redirect = settings.redirect_uri
    try:
        asked = await auth.probe_client()
    except ServerMisconfigured:
        problems = auth.health.problems
        client = problems.get("client")
        if client is not None:
            checks.append(Check("FAIL", "client credentials", client.reason))
            checks.append(Check("SKIP", "redirect URI", "not checked: the client's credentials were refused"))
        else:
            checks.append(Check("PASS", "client credentials", "the provider authenticated BFF_CLIENT_ID (PAR push)"))
            for key, problem in problems.items():
                checks.append(Check("FAIL", "redirect URI" if key == "redirect" else "authorization request",
                                    problem.reason))  # fmt: skip
    except AuthServerUnavailable as exc:
        checks.append(Check("FAIL", "client credentials", f"not checked: {_down(exc)}"))
    else:
        how = "a PAR push" if asked == "par" else "a code exchange it refused as invalid_grant, not invalid_client"
        checks.append(Check("PASS", "client credentials", f"the provider authenticated BFF_CLIENT_ID ({how})"))
        if asked == "par":
            checks.append(Check("PASS", "redirect URI", f"{redirect} is registered (the PAR push accepted it)"))
        else:
            checks.append(
                Check(
                    "SKIP",
                    "redirect URI",
                    f"could not be checked: the provider has no PAR endpoint, so only a browser's login shows "
                    f"whether {redirect} is registered for BFF_CLIENT_ID",
                )
            )

    grants = metadata.get("grant_types_supported")
    scopes_supported = metadata.get("scopes_supported") or []
    scopes = settings.scopes.split()
    if isinstance(grants, list) and "refresh_token" not in grants:
        checks.append(
            Check(
                "FAIL",
                "refresh tokens",
                "the provider's grant_types_supported lacks refresh_token: every session would end with its first "
                "access token; enable refresh tokens for BFF_CLIENT_ID at the provider",
            )
        )
    elif "offline_access" in scopes_supported and "offline_access" not in scopes:
        checks.append(
            Check(
                "WARN",
                "refresh tokens",
                "the provider knows offline_access and BFF_SCOPES does not ask for it: providers such as "
                "node-oidc-provider then issue no refresh token; add offline_access to BFF_SCOPES if logins get none",
            )
        )
    elif grants is None:
        checks.append(Check("WARN", "refresh tokens", "the provider does not say (no grant_types_supported)"))
    else:
        checks.append(Check("PASS", "refresh tokens", "the refresh_token grant is advertised"))

    if metadata.get("backchannel_logout_supported") is True:
        checks.append(Check("PASS", "back-channel logout", "advertised: a logout at the provider ends BFF sessions"))
    else:
        checks.append(
            Check(
                "WARN",
                "back-channel logout",
                "not advertised: a logout at the provider (or elsewhere) will not end this BFF's sessions until "
                "their refresh fails",
            )
        )
    return checks


async def _upstream(http: httpx.AsyncClient, name: str, url: str) -> Check:
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        return Check(
            "FAIL",
            f"route {name}",
            f"the upstream {url} does not answer ({describe(exc)}); check the url of route {name!r} in BFF_ROUTES, "
            "or start it",
        )
    return Check("PASS", f"route {name}", f"{url} answers ({response.status_code} to a GET without a token)")


async def _frontend(http: httpx.AsyncClient, settings: Settings) -> Check:
    """What BFF_FRONTEND serves (a directory was checked as the settings were read); a dev server or CDN origin
    must answer."""
    from bff.frontend import describe as serves

    if settings.frontend_kind != "url":
        return Check("PASS", "frontend", serves(settings).removeprefix("frontend: "))
    try:
        response = await http.get(settings.frontend + "/")
    except httpx.HTTPError as exc:
        return Check(
            "FAIL",
            "frontend",
            f"{settings.frontend} does not answer ({describe(exc)}); start the dev server, or fix BFF_FRONTEND",
        )
    return Check("PASS", "frontend", f"{settings.frontend} answers ({response.status_code} to GET /)")


async def _redis(settings: Settings) -> Check:
    from servicekit.redis import open_redis

    where = re.sub(r"//[^@/]*@", "//", settings.redis_url)
    client: Any = open_redis(settings.redis_url, settings.redis_cluster)
    try:
        async with asyncio.timeout(TIMEOUT):
            await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return Check(
            "FAIL", "redis", f"{where} does not answer ({type(exc).__name__}); check REDIS_URL, or start Redis"
        )
    finally:
        await client.aclose()
    return Check("PASS", "redis", f"{where} answers PING")


async def run_checks(settings: Settings) -> list[Check]:
    async with httpx.AsyncClient(timeout=min(settings.auth_timeout, TIMEOUT), follow_redirects=False) as http:
        checks = await _provider(settings, http)
        upstreams = await asyncio.gather(*(_upstream(http, name, route.url) for name, route in settings.routes.items()))
        frontend = await _frontend(http, settings)
    return [*checks, *upstreams, frontend, await _redis(settings)]


def command(settings: Settings) -> tuple[int, list[str]]:
    """The exit status and the lines of ``bff check``."""
    checks = asyncio.run(run_checks(settings))
    failed = sum(check.status == "FAIL" for check in checks)
    summary = f"{failed} check(s) failed" if failed else "every check passed"
    return (1 if failed else 0), [*(check.line() for check in checks), summary]
