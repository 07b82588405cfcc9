"""Header size, header time and concurrency are bounded on every service command, on real sockets (issue 10 item 2).

Each service runs as its own process (``python -m auth_server``, ``python -m resource_server``,
``python -m bff serve``), the limits given as command-line flags to one and as environment variables to another.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RedisServer, ServiceProcess, free_port

MAX_HEADER_BYTES = 16_384
HEADER_TIMEOUT = 1.0
MAX_CONCURRENCY = 24
FLAGS = [
    "--max-header-bytes",
    str(MAX_HEADER_BYTES),
    "--header-timeout",
    str(HEADER_TIMEOUT),
    "--max-concurrency",
    str(MAX_CONCURRENCY),
]
ENV = {
    "HTTP_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "HTTP_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
}
SERVICES = ["auth_server", "resource_server", "bff"]


@pytest.fixture(scope="module")
def services(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    nowhere = f"http://127.0.0.1:{free_port()}"  # no auth server: these tests never get that far
    keys = tmp_path_factory.mktemp("keys")
    procs = {
        # the auth server takes its limits from the environment, the other two from flags
        "auth_server": ServiceProcess(
            ["-m", "auth_server"], {**ENV, "REDIS_URL": redis_server.url, "AUTH_KEYS_DIR": str(keys)}
        ),
        "resource_server": ServiceProcess(
            ["-m", "resource_server", *FLAGS], {"REDIS_URL": redis_server.url, "RS_ISSUER": nowhere}
        ),
        "bff": ServiceProcess(
            ["-m", "bff", "serve", *FLAGS],
            {"REDIS_URL": redis_server.url, "BFF_ISSUER": nowhere, "BFF_CLIENT_SECRET": "limits-test-secret"},
        ),
    }
    started = []
    try:
        for proc in procs.values():
            started.append(proc.start())
        yield procs
    finally:
        for proc in started:
            assert "Traceback" not in proc.output(), proc.output()
            proc.cleanup()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sends before it closes (b"" for a close without an answer; a reset counts as a close)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def _send_all_you_can(sock: socket.socket, data: bytes) -> int:
    """Send ``data`` until the server stops reading or closes; returns how much went out."""
    sent = 0
    sock.settimeout(2)
    try:
        while sent < len(data):
            sent += sock.send(data[sent : sent + 65536])
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass
    return sent


def _one_response(sock: socket.socket) -> bytes:
    """One whole response on a kept-alive connection (headers, then Content-Length bytes of body)."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


@pytest.mark.parametrize("service", SERVICES)
def test_a_megabyte_header_is_refused_with_431_and_a_modest_one_passes(services: dict[str, Any], service: str) -> None:
    port = services[service].port
    with _connect(port) as sock:
        _send_all_you_can(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        answer = _answer(sock)
    assert _status(answer) in (431, None), answer[:200]  # 431, or a connection closed under a writer
    if answer:
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request_header_fields_too_large"

    # Many headers adding up past the limit: the same.
    with _connect(port) as sock:
        lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
        _send_all_you_can(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        assert _status(_answer(sock)) in (431, None)

    # Under the limit, with a body bigger than the limit in the same packet: the body does not count as headers.
    with _connect(port) as sock:
        body = b"x" * (4 * MAX_HEADER_BYTES)
        head = b"POST /healthz HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"f" * 8000 + b"\r\n"
        sock.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        assert _status(_answer(sock)) == 405  # /healthz is GET only: the request got through to the app
    ok = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Fine": "f" * 8000})
    assert ok.status_code == 200

    # Found attacking: what followed an end of headers in the same read was not counted, so a request behind empty
    # lines, or pipelined behind a small one, passed with any size the read held. Each request is counted.
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    # each request before the refused one is answered, in order (one queued behind another too), then its 431
    for sent, answered in ((b"\r\n\r\n" + big, 0), (small + big, 1), (small + small + big, 2)):
        with _connect(port) as sock:
            sock.sendall(sent)
            answers = _answer(sock)
        assert answers.count(b"HTTP/1.1 200") == answered and answers.endswith(b"}"), (sent[:40], answers[:300])
        assert answers.count(b"HTTP/1.1 ") == answered + 1 and b"HTTP/1.1 431 " in answers, answers[:300]


@pytest.mark.parametrize(("service", "path"), [("bff", "/bff/backchannel"), ("auth_server", "/oauth/token")])
def test_large_trailers_on_a_chunked_body_do_not_hang_the_connection(
    services: dict[str, Any], service: str, path: str
) -> None:
    """Found attacking: trailers (llhttp reports them as headers) counted as the next request's headers, which held
    the request being read as one to refuse after its own answer: no answer, no timer, the connection held for good.
    Trailers belong to the body: the request is answered."""
    with _connect(services[service].port) as sock:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" % path.encode()
        sock.sendall(head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\na=bcd\r\n")
        sock.sendall(b"0\r\nX-Trailer: " + b"t" * (MAX_HEADER_BYTES + 1000) + b"\r\n\r\n")
        answer = _answer(sock)  # a timeout here is the hang
    assert _status(answer) is not None and 400 <= (_status(answer) or 0) < 500, answer[:300]


@pytest.mark.parametrize("service", SERVICES)
def test_an_empty_line_after_a_kept_alive_answer_is_not_a_way_to_hold_the_connection(
    services: dict[str, Any], service: str
) -> None:
    """Found attacking: one CRLF after an answer cancelled uvicorn's keep-alive timer and began no request (llhttp
    skips empty lines), so no timer was left: the connection stayed open for good. The header timer closes it."""
    with _connect(services[service].port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(_one_response(sock)) == 200
        sock.sendall(b"\r\n")
        started = time.monotonic()
        _answer(sock, timeout=HEADER_TIMEOUT + 4)  # a timeout here is the connection held
    assert time.monotonic() - started < HEADER_TIMEOUT + 3


@pytest.mark.parametrize("service", SERVICES)
def test_a_connection_dripping_header_lines_is_closed_within_the_timeout(
    services: dict[str, Any], service: str
) -> None:
    port = services[service].port
    results: dict[str, tuple[float, bytes]] = {}

    def drip(name: str, first: bytes) -> None:
        with _connect(port) as sock:
            start = time.monotonic()
            sock.settimeout(0.25)
            answer = b""
            if first:
                sock.sendall(first)
            try:
                while time.monotonic() - start < HEADER_TIMEOUT + 5:
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        sock.sendall(b"X-Drip: 1\r\n" if first else b"")  # one more header line, never the end
                        continue
                    if not chunk:
                        break
                    answer += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
            results[name] = (time.monotonic() - start, answer)

    kept_alive: list[bytes] = []

    def keep_alive() -> None:
        # A kept-alive connection is not cut by the header timer while it is idle between requests or busy
        with _connect(port) as sock:
            for _ in range(3):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                kept_alive.append(_one_response(sock))
                time.sleep(HEADER_TIMEOUT * 0.6)

    threads = [
        threading.Thread(target=drip, args=("drip", b"GET /healthz HTTP/1.1\r\nHost: x\r\n")),
        threading.Thread(target=drip, args=("silent", b"")),  # connects and says nothing
        threading.Thread(target=keep_alive),  # on its own connection, meanwhile: the timers are per connection
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, (elapsed, answer) in results.items():
        assert HEADER_TIMEOUT - 0.2 <= elapsed <= HEADER_TIMEOUT + 1.5, (name, elapsed)
        assert _status(answer) in (408, None), (name, answer[:200])
    assert _status(results["drip"][1]) == 408
    assert len(kept_alive) == 3 and all(a.startswith(b"HTTP/1.1 200") for a in kept_alive), kept_alive


@pytest.mark.parametrize("service", SERVICES)
def test_beyond_the_concurrency_cap_requests_get_503(services: dict[str, Any], service: str) -> None:
    port = services[service].port
    holders = [_connect(port) for _ in range(MAX_CONCURRENCY + 1)]
    try:
        for sock in holders:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # unfinished: each holds a connection
        time.sleep(0.2)
        busy = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert busy.status_code == 503
        assert busy.json()["error"] == "temporarily_unavailable" and busy.headers["retry-after"] == "1"
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + 5
    while (status := httpx.get(f"http://127.0.0.1:{port}/healthz").status_code) != 200:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_hundred_unfinished_megabyte_headers_cost_the_bff_little_memory(services: dict[str, Any]) -> None:
    bff = services["bff"]
    assert bff.proc is not None
    before = _rss_kib(bff.proc.pid)
    socks = [_connect(bff.port) for _ in range(100)]
    try:
        blob = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20)  # never finished
        threads = [threading.Thread(target=_send_all_you_can, args=(sock, blob)) for sock in socks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        grown = _rss_kib(bff.proc.pid) - before
    finally:
        for sock in socks:
            sock.close()
    assert grown < 16 * 1024, f"the BFF grew {grown} KiB"  # unbounded, it grew ~90 MiB
