"""`bff serve --uds PATH` (servicekit.server): the service on a Unix socket, with worker processes, restarts over the
socket file a crash left behind, and refuses to take over one a live server listens on. And which peer counts as the
socket's (servicekit.proxies.peer)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from servicekit.proxies import TrustedProxies, peer
from tests.conftest import REPO, RedisServer, ServiceProcess, free_port


def test_a_socket_left_by_a_crash_is_cleared_and_a_live_one_is_kept(redis_server: RedisServer) -> None:
    path = Path(tempfile.mkdtemp(prefix="jwt-bff-uds-")) / "bff.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # the file of a server that died: nobody listens on it
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {"REDIS_URL": redis_server.url, "BFF_ISSUER": nowhere, "BFF_CLIENT_SECRET": "uds-test-secret-0123456789"}
    # uvicorn's bind for --workers refused the stale path: the service never came back after a crash
    bff = ServiceProcess(["-m", "bff", "serve", "--uds", str(path), "--workers", "2"], env).start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "bff", "serve", "--uds", str(path)],
            env={**os.environ, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "a server is listening on this socket already" in second.stderr
        assert bff._healthy()  # the first one is untouched
    finally:
        bff.cleanup()


def test_only_a_peer_of_a_server_on_a_unix_socket_is_the_sockets() -> None:
    trusted = TrustedProxies(("unix",))
    on_the_socket = {"client": None, "server": ("/run/jwt-bff/bff.sock", None)}  # uvicorn's, for a Unix socket
    reset_tcp = {"client": None, "server": ("127.0.0.1", 8000)}  # a TCP peer gone before it was accepted
    tcp = {"client": ("10.0.0.7", 51000), "server": ("127.0.0.1", 8000)}
    older = {"client": None, "server": None}  # older uvicorn's scope for a Unix socket: no server address either
    assert [peer(s) for s in (on_the_socket, reset_tcp, tcp, older)] == [None, "", "10.0.0.7", None]
    assert peer(on_the_socket) in trusted and peer(reset_tcp) not in trusted and peer(tcp) not in trusted
    assert TrustedProxies(()).client_address(peer(reset_tcp), [(b"x-forwarded-for", b"203.0.113.1")]) == ""
