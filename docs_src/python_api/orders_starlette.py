"""An orders API on Starlette: every request needs an access token the BFF's auth server issued for `orders`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_bff_verifier import TokenVerifier
from jwt_bff_verifier.starlette import BearerAuthMiddleware, get_claims, requires_scope


@requires_scope("orders:read")  # 401 without a valid token, 403 insufficient_scope without the scope
async def list_orders(request: Request) -> JSONResponse:
    return JSONResponse({"owner": get_claims(request)["sub"], "orders": []})


@requires_scope("orders:write")
async def create_order(request: Request) -> JSONResponse:
    claims = get_claims(request)  # the verified claims (also request.auth)
    return JSONResponse({"owner": claims["sub"], "client": claims.get("client_id")}, status_code=201)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def create_app(verifier: TokenVerifier) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await verifier.start()  # load the keys now (a down auth server is retried, never fatal)
        yield
        await verifier.aclose()

    app = Starlette(
        routes=[
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders", create_order, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(BearerAuthMiddleware, verifier=verifier, public_paths={"/healthz"})
    return app


# The auth server's issuer (its `iss`, exactly) and this API's audience (the `resource` of its BFF route).
# The JWKS is discovered from the issuer's metadata and cached by `kid`; no call to the auth server per request.
app = create_app(TokenVerifier("https://auth.example.com", "orders", revocations=True))
