"""The BFF's DPoP key and proofs (bff/dpop.py): proofs the verifier accepts, a key file checked at start-up, nonces
kept per origin, and no silent downgrade to bearer tokens."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bff.app import create_app
from bff.auth_client import AuthClient
from bff.dpop import DPoPSigner, credential_headers
from bff.errors import AuthServerUnavailable
from bff.settings import Settings, SettingsError
from resource_server.verifier.dpop import ProofVerifier, ReplayCache, jwk_thumbprint
from resource_server.verifier.errors import InvalidDPoPProof

pytestmark = pytest.mark.anyio


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_proofs_pass_every_check_of_the_verifier(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    signer = DPoPSigner.from_file(path)
    assert signer.jkt == jwk_thumbprint(signer.jwk)
    verifier = ProofVerifier(replay=ReplayCache())
    token = "header.payload.signature"
    [(_, authorization), (_, proof)] = credential_headers(signer, token, "POST", "https://api.test/notes?q=1#x")
    assert authorization == f"DPoP {token}"
    checked = verifier.verify(proof, method="POST", url="https://api.test/notes", access_token=token)
    assert checked.jkt == signer.jkt and checked.nonce is None
    with pytest.raises(InvalidDPoPProof):
        verifier.verify(proof, method="POST", url="https://api.test/notes", access_token=token)  # one use
    second = signer.proof("POST", "https://api.test/notes", token)
    assert second != proof and verifier.verify(second, method="POST", url="https://api.test/notes", access_token=token)
    assert credential_headers(None, token, "GET", "https://api.test/") == [("Authorization", f"Bearer {token}")]


def test_nonces_are_kept_per_origin() -> None:
    signer = DPoPSigner(ec.generate_private_key(ec.SECP256R1()))
    assert signer.remember_nonce("https://a.test/x?y", "n1") and not signer.remember_nonce("https://a.test/z", "n1")
    verifier = ProofVerifier()
    a = verifier.verify(signer.proof("GET", "https://a.test/p"), method="GET", url="https://a.test/p")
    b = verifier.verify(signer.proof("GET", "https://b.test/p"), method="GET", url="https://b.test/p")
    assert a.nonce == "n1" and b.nonce is None
    assert not signer.remember_nonce("https://a.test/", None) and not signer.remember_nonce(
        "https://a.test/", "x" * 300
    )


@pytest.mark.parametrize("content", ["missing", "garbage", "rsa", "p384"])
def test_a_bad_key_file_stops_the_start(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key.pem"
    if content == "garbage":
        path.write_text("not a key")
    elif content == "rsa":
        path.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    elif content == "p384":
        path.write_bytes(pem(ec.generate_private_key(ec.SECP384R1())))
    settings = Settings.from_env({"BFF_CLIENT_SECRET": "s", "BFF_DPOP_KEY_FILE": str(path)})
    with pytest.raises(SettingsError, match="DPoP|P-256|BFF_DPOP_KEY_FILE"):
        create_app(settings)


async def test_a_provider_that_does_not_bind_is_not_silently_used_as_bearer() -> None:
    proofs: list[bool] = []

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/"):
            return httpx.Response(
                200,
                json={
                    "issuer": "http://auth.test",
                    "authorization_endpoint": "http://auth.test/authorize",
                    "token_endpoint": "http://auth.test/token",
                },
            )
        proofs.append("dpop" in request.headers)  # this provider ignores a proof (RFC 9449 §5 allows that)
        return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 60})

    settings = Settings.from_env({"BFF_CLIENT_SECRET": "s", "BFF_ISSUER": "http://auth.test"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http:
        auth = AuthClient(settings, http)
        auth.dpop = DPoPSigner(ec.generate_private_key(ec.SECP256R1()))
        with pytest.raises(AuthServerUnavailable, match="dpop"):
            await auth.exchange_code("code", "v" * 43)
        auth.dpop = None
        assert (await auth.exchange_code("code", "v" * 43)).access_token == "t"
    assert proofs == [True, False]
