"""The same orders API on FastAPI: a dependency instead of the middleware (same checks, errors and challenges)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from jwt_bff_verifier import AccessTokenClaims, TokenVerifier
from jwt_bff_verifier.fastapi import require_scope, use_verifier

app = FastAPI()
use_verifier(app, TokenVerifier("https://auth.example.com", "orders", revocations=True))

ReadClaims = Annotated[AccessTokenClaims, Depends(require_scope("orders:read"))]


@app.get("/orders")
async def list_orders(claims: ReadClaims) -> dict[str, str]:
    return {"owner": claims["sub"]}
