"""The same payments API on FastAPI: ``Depends(require_auth(...))`` instead of the decorator."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI

from jwt_bff_verifier import AccessTokenClaims, TokenVerifier
from jwt_bff_verifier.fastapi import authenticated, require_auth, use_verifier


def create_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    use_verifier(app, verifier)  # refusals become RFC 6750 / RFC 9470 answers

    @app.get("/balance")
    async def balance(claims: Annotated[AccessTokenClaims, Depends(authenticated)]) -> dict[str, Any]:
        return {"owner": claims["sub"], "balance": 100}

    @app.post("/transfers", status_code=201)
    async def transfer(
        claims: Annotated[AccessTokenClaims, Depends(require_auth(acr_values=["mfa"], max_age=300))],
    ) -> dict[str, Any]:
        return {"owner": claims["sub"], "acr": claims["acr"], "amr": claims["amr"]}

    return app


app = create_app(TokenVerifier("https://auth.example.com", "payments"))
