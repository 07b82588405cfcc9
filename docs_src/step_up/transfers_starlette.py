"""A payments API on Starlette: reading needs a login; sending money needs a second factor given in the last 5 minutes
(RFC 9470 step-up). A weaker or older login gets 401 insufficient_user_authentication, which the BFF turns into a
step-up for the browser."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_bff_verifier import TokenVerifier
from jwt_bff_verifier.starlette import BearerAuthMiddleware, get_claims, require_auth


async def balance(request: Request) -> JSONResponse:
    return JSONResponse({"owner": get_claims(request)["sub"], "balance": 100})


@require_auth(acr_values=["mfa"], max_age=300)  # a password and a second factor, at most 300 s ago
async def transfer(request: Request) -> JSONResponse:
    claims = get_claims(request)
    return JSONResponse({"owner": claims["sub"], "acr": claims["acr"], "amr": claims["amr"]}, status_code=201)


def create_app(verifier: TokenVerifier) -> Starlette:
    app = Starlette(
        routes=[Route("/balance", balance), Route("/transfers", transfer, methods=["POST"])],
    )
    app.add_middleware(BearerAuthMiddleware, verifier=verifier)
    return app


app = create_app(TokenVerifier("https://auth.example.com", "payments"))
