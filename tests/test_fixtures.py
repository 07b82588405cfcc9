"""The fixtures themselves: a private Redis that keeps its data over a restart, and a real-socket server."""

from __future__ import annotations

import httpx
import redis
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import RedisServer, ServerThread


def test_private_redis_is_not_the_machine_one(redis_url: str) -> None:
    assert not redis_url.startswith("redis://127.0.0.1:6379")
    r = redis.Redis.from_url(redis_url)
    r.set("k", "v")
    assert r.get("k") == b"v"
    r.close()


def test_redis_is_flushed_between_tests(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    assert r.dbsize() == 0
    r.close()


def test_redis_restart_keeps_data(redis_factory) -> None:  # type: ignore[no-untyped-def]
    server: RedisServer = redis_factory()
    r = redis.Redis.from_url(server.url)
    r.set("survives", "yes")
    r.close()
    server.stop()
    server.start()
    r = redis.Redis.from_url(server.url)
    assert r.get("survives") == b"yes"
    r.close()


def test_server_thread_serves_on_a_real_socket(server_factory) -> None:  # type: ignore[no-untyped-def]
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("hi"))])
    srv: ServerThread = server_factory(app)
    assert httpx.get(srv.url + "/").text == "hi"
