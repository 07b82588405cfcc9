"""The sample notes API, in-process against a real redis-server, with tokens from FakeIssuer (no auth server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from resource_server.app import create_app
from resource_server.settings import Settings
from resource_server.verifier.testing import FakeIssuer

from .helpers import bearer

pytestmark = pytest.mark.anyio

ISSUER = "http://localhost:9000"


@pytest.fixture(scope="module")
def issuer() -> FakeIssuer:
    return FakeIssuer(ISSUER, "notes")


@pytest.fixture
async def api(redis_url: str, issuer: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({"REDIS_URL": redis_url, "RS_MAX_NOTES": "3"})
    redis = aioredis.Redis.from_url(redis_url)
    app = create_app(settings, redis=redis, verifier=issuer.verifier())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as client:
        yield client
    await redis.aclose()


def rw(issuer: FakeIssuer, sub: str = "alice") -> dict[str, str]:
    return bearer(issuer.token("notes:read notes:write", sub=sub, client_id="bff"))


async def test_me_returns_the_callers_claims(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    response = await api.get("/me", headers=rw(issuer))
    assert response.status_code == 200
    assert response.json() == {"sub": "alice", "scope": "notes:read notes:write", "client_id": "bff", "aud": "notes"}
    anonymous = await api.get("/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="notes"'


async def test_notes_are_created_listed_newest_first_and_deleted(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    created = []
    for text in ("first", "  second  ", "third"):
        response = await api.post("/notes", headers=rw(issuer), json={"text": text})
        assert response.status_code == 201, response.text
        created.append(response.json())
    assert created[1]["text"] == "second"  # stripped
    assert set(created[0]) == {"id", "text", "created_at"}
    listed = (await api.get("/notes", headers=rw(issuer))).json()["notes"]
    assert [n["text"] for n in listed] == ["third", "second", "first"]
    assert listed[0] == created[2]

    assert (await api.delete(f"/notes/{created[1]['id']}", headers=rw(issuer))).status_code == 204
    again = await api.delete(f"/notes/{created[1]['id']}", headers=rw(issuer))
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"
    listed = (await api.get("/notes", headers=rw(issuer))).json()["notes"]
    assert [n["text"] for n in listed] == ["third", "first"]


async def test_notes_are_per_user(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    note = (await api.post("/notes", headers=rw(issuer, "alice"), json={"text": "alice's"})).json()
    assert (await api.get("/notes", headers=rw(issuer, "bob"))).json() == {"notes": []}
    assert (await api.delete(f"/notes/{note['id']}", headers=rw(issuer, "bob"))).status_code == 404
    assert len((await api.get("/notes", headers=rw(issuer, "alice"))).json()["notes"]) == 1


async def test_scopes_guard_reading_and_writing(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    read_only = bearer(issuer.token("notes:read"))
    write_only = bearer(issuer.token("notes:write"))
    post = await api.post("/notes", headers=read_only, json={"text": "x"})
    assert post.status_code == 403
    assert post.headers["www-authenticate"].endswith('scope="notes:write"')
    delete = await api.delete("/notes/abc", headers=read_only)
    assert delete.status_code == 403
    get = await api.get("/notes", headers=write_only)
    assert get.status_code == 403
    assert get.headers["www-authenticate"].endswith('scope="notes:read"')
    assert (await api.post("/notes", headers=write_only, json={"text": "x"})).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "JSON"),
        (b"", 400, "JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'"text"', 400, "JSON object"),
        (b"{}", 400, "text"),
        (b'{"text": ""}', 400, "text"),
        (b'{"text": "   \\n\\t "}', 400, "text"),
        (b'{"text": 42}', 400, "text"),
        (b'{"text": null}', 400, "text"),
        (b'{"text": ["a"]}', 400, "text"),
        (('{"text": "' + "x" * 2001 + '"}').encode(), 400, "text"),
        (b"\xff\xfe\x00", 400, "JSON"),
        (b'{"text": NaN}', 400, "text"),
        pytest.param(b"[" * 10_000, 400, "JSON", id="deep"),  # deeper than the parser's stack: was a 500
        pytest.param(b'{"text": "a\\ud800b"}', 400, "surrogate", id="lone-high"),  # cannot be sent as UTF-8
        pytest.param(b'{"text": "\\udfff"}', 400, "surrogate", id="lone-low"),
        (('{"text": "' + "x" * 17000 + '"}').encode(), 413, "16384"),
    ],
)
async def test_bad_notes_are_4xx_json_never_500(
    api: httpx.AsyncClient, issuer: FakeIssuer, body: bytes, status: int, needle: str
) -> None:
    response = await api.post("/notes", headers={**rw(issuer), "Content-Type": "application/json"}, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] in ("invalid_request", "request_too_large")
    assert needle in response.json()["error_description"]


async def test_a_streamed_body_over_16_kib_is_413(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    response = await api.post("/notes", headers=rw(issuer), content=chunks())  # chunked: no Content-Length
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


async def test_a_note_of_exactly_2000_characters_is_accepted(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    response = await api.post("/notes", headers=rw(issuer), json={"text": "é" * 2000})
    assert response.status_code == 201
    assert response.json()["text"] == "é" * 2000


async def test_a_full_notebook_is_409(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    for i in range(3):  # RS_MAX_NOTES=3 in this fixture
        assert (await api.post("/notes", headers=rw(issuer), json={"text": str(i)})).status_code == 201
    full = await api.post("/notes", headers=rw(issuer), json={"text": "one too many"})
    assert full.status_code == 409
    assert full.json()["error"] == "too_many_notes"
    assert len((await api.get("/notes", headers=rw(issuer))).json()["notes"]) == 3


@pytest.mark.parametrize("note_id", ["..%2F..%2Fetc", "x" * 65, "a:b", "%00", "*"])
async def test_odd_note_ids_are_404(api: httpx.AsyncClient, issuer: FakeIssuer, note_id: str) -> None:
    response = await api.delete(f"/notes/{note_id}", headers=rw(issuer))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_notes_are_stored_under_the_rs_prefix_with_a_hash_tag(
    api: httpx.AsyncClient, issuer: FakeIssuer, redis_url: str
) -> None:
    token = issuer.token("notes:write", sub="dave")
    await api.post("/notes", headers=bearer(token), json={"text": "x"})
    redis = aioredis.Redis.from_url(redis_url)
    keys = await redis.keys("*")
    values = await redis.hvals("rs:notes:{dave}")
    await redis.aclose()
    assert keys == [b"rs:notes:{dave}"]
    assert all(token.encode() not in value for value in values)


async def test_health_ready_metrics_and_ping(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready", "keys": True, "redis": True}
    assert (await api.get("/ping")).json() == {"pong": True, "sub": None}
    assert (await api.get("/ping", headers=rw(issuer))).json() == {"pong": True, "sub": "alice"}
    await api.get("/notes", headers=bearer(issuer.expired_token("notes:read")))
    await api.get("/notes", headers=bearer(issuer.unsigned_token()))
    await api.post("/notes", headers=rw(issuer), json={"text": "x"})
    text = (await api.get("/metrics")).text
    assert 'rs_requests_total{method="POST",route="/notes",status="201"} 1.0' in text
    assert 'rs_requests_total{method="GET",route="/notes",status="401"} 2.0' in text
    assert 'rs_token_failures_total{reason="expired"} 1.0' in text
    assert 'rs_token_failures_total{reason="malformed"} 1.0' in text
    assert 'rs_request_duration_seconds_bucket{le="0.005",route="/ping"}' in text


async def test_unknown_routes_and_methods_are_json(api: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    missing = await api.get("/nope", headers=rw(issuer))
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await api.put("/notes", headers=rw(issuer))
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"


async def test_redis_down_is_503_json_and_recovers(redis_factory: Any, issuer: FakeIssuer) -> None:
    server = redis_factory()
    redis = aioredis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
    app = create_app(Settings.from_env({"REDIS_URL": server.url}), redis=redis, verifier=issuer.verifier())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as api:
        assert (await api.post("/notes", headers=rw(issuer), json={"text": "kept"})).status_code == 201
        server.stop()
        for response in (
            await api.get("/notes", headers=rw(issuer)),
            await api.post("/notes", headers=rw(issuer), json={"text": "x"}),
            await api.delete("/notes/abc", headers=rw(issuer)),
        ):
            assert response.status_code == 503
            assert response.json()["error"] == "temporarily_unavailable"
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "keys": True, "redis": False}
        server.start()
        assert [n["text"] for n in (await api.get("/notes", headers=rw(issuer))).json()["notes"]] == ["kept"]
        assert (await api.get("/readyz")).status_code == 200
    await redis.aclose()


def test_settings_from_env() -> None:
    from resource_server.settings import SettingsError

    default = Settings.from_env({})
    assert (default.issuer, default.audience, default.jwks_url, default.algorithms, default.leeway) == (
        "http://localhost:9000",
        "notes",
        None,
        ("RS256", "ES256", "EdDSA"),
        30,
    )
    custom = Settings.from_env(
        {
            "RS_ISSUER": "https://auth.example/",
            "RS_ALGORITHMS": "ES256",
            "RS_JWKS_URL": "http://auth:9000/jwks",
            "REDIS_URL": "redis://:s3cret@r:6379/0",
        }
    )
    assert custom.issuer == "https://auth.example/"  # verbatim: iss is compared exactly
    assert custom.algorithms == ("ES256",)
    assert "s3cret" not in repr(custom)
    for env, name in [
        ({"RS_ALGORITHMS": "RS256,HS256"}, "RS_ALGORITHMS"),
        ({"RS_ALGORITHMS": "none"}, "RS_ALGORITHMS"),
        ({"RS_LEEWAY": "soon"}, "RS_LEEWAY"),
        ({"RS_LEEWAY": "-1"}, "RS_LEEWAY"),
        ({"RS_ISSUER": "localhost:9000"}, "RS_ISSUER"),
        ({"RS_JWKS_URL": "file:///x"}, "RS_JWKS_URL"),
        ({"RS_JWKS_COOLDOWN": "x"}, "RS_JWKS_COOLDOWN"),
        ({"RS_MAX_NOTES": "0"}, "RS_MAX_NOTES"),
        ({"RS_VERIFY_CACHE_SIZE": "-5"}, "RS_VERIFY_CACHE_SIZE"),
    ]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(env)


async def test_unreadable_stored_notes_never_break_the_list(redis_url: str, issuer: FakeIssuer) -> None:
    """Records this version never writes (damaged, or a lone surrogate stored before it was refused) are repaired
    or skipped: one bad record made GET /notes a 500 for good."""
    redis = aioredis.Redis.from_url(redis_url)
    key = "rs:notes:{alice}"
    await redis.hset(key, "bad", b"{not json")
    await redis.hset(key, "deep", b"[" * 10_000)
    await redis.hset(key, "shape", b'{"id": 1}')
    await redis.hset(key, "lone", b'{"id": "lone", "text": "a\\ud800b", "created_at": "2026-01-01T00:00:00Z"}')
    app = create_app(Settings.from_env({"REDIS_URL": redis_url}), redis=redis, verifier=issuer.verifier())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as api:
        created = await api.post("/notes", headers=rw(issuer), json={"text": "fine \U0001f600"})
        assert created.status_code == 201
        response = await api.get("/notes", headers=rw(issuer))
    await redis.aclose()
    assert response.status_code == 200, response.text
    assert [note["text"] for note in response.json()["notes"]] == ["fine \U0001f600", "a\ufffdb"]


async def test_the_api_runs_on_the_embedded_store_of_bff_stack(issuer: FakeIssuer) -> None:
    """`bff stack` passes one fakeredis to all three apps: the notes API must work on it (and not close it)."""
    import fakeredis

    store = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    app = create_app(Settings.from_env({"RS_MAX_NOTES": "1"}), redis=store, verifier=issuer.verifier())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as api,
    ):
        assert (await api.get("/readyz")).status_code == 200
        assert (await api.post("/notes", headers=rw(issuer), json={"text": "one"})).status_code == 201
        assert (await api.post("/notes", headers=rw(issuer), json={"text": "two"})).status_code == 409
        assert [n["text"] for n in (await api.get("/notes", headers=rw(issuer))).json()["notes"]] == ["one"]
    assert await store.ping()  # still open after the app's shutdown
    await store.aclose()
