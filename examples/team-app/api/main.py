"""The team's own API: FastAPI, verifying the access tokens the BFF sends with jwt_bff_verifier.

Run: API_ISSUER=http://127.0.0.1:9400 API_AUDIENCE=https://orders.example/ uvicorn --app-dir api main:app --port 9500

It never sees a cookie: the BFF sends ``Authorization: Bearer <JWT>``, an RFC 9068 access token the provider issued
for this API alone (``aud`` = ``API_AUDIENCE``, asked for with the route's ``resource``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI

from jwt_bff_verifier import AccessTokenClaims, TokenVerifier
from jwt_bff_verifier.fastapi import require_scope, use_verifier

ISSUER = os.environ.get("API_ISSUER", "http://127.0.0.1:9400")
AUDIENCE = os.environ.get("API_AUDIENCE", "https://orders.example/")

# Keys come from the issuer's JWKS (discovered, cached by kid); the revocation feed is polled only if the issuer
# advertises one (node-oidc-provider does not: nothing is polled).
verifier = TokenVerifier(ISSUER, AUDIENCE, revocations=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await verifier.start()
    yield
    await verifier.aclose()


app = FastAPI(lifespan=lifespan)
use_verifier(app, verifier)

ORDERS = {"alice": [{"id": "A-1", "item": "tea", "qty": 2}], "bob": [{"id": "B-7", "item": "mugs", "qty": 6}]}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/orders")
async def orders(claims: Annotated[AccessTokenClaims, Depends(require_scope("orders:read"))]) -> dict[str, object]:
    return {"user": claims["sub"], "orders": ORDERS.get(claims["sub"], [])}


@app.get("/report")
async def report(claims: Annotated[AccessTokenClaims, Depends(require_scope("orders:read"))]) -> dict[str, object]:
    # Only admins get here: the BFF's route rule (require groups = ["admin"]) refuses everyone else before this API
    # is called. The API still checks its token: a rule at the BFF is a gate, not the API's authorization.
    return {"orders": sum(len(o) for o in ORDERS.values()), "by": claims["sub"]}
