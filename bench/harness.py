"""What the benchmarks share: private processes on loopback, a browser-like login, and wrk."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx

from tests.processes import terminate

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A process of ours on loopback, stopped on exit."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None, health: str | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="jwt-bff-bench-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, env={**os.environ, **(env or {})}, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT
        )
        if health:
            wait_http(health, self)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        terminate(self.proc, 15)
        Path(self.log.name).unlink(missing_ok=True)


def wait_http(url: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"process exited: {proc.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s" + (f":\n{proc.output()}" if proc else ""))


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def start_redis(procs: list[Proc], *extra: str) -> tuple[str, int]:
    """A private redis-server (``extra``: more options, e.g. ``--replicaof host port``); its URL and port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="jwt-bff-bench-redis-")
    procs.append(
        Proc(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
            + list(extra)
        )
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", port


def given_env(items: Iterable[str], **placeholders: str) -> dict[str, str]:
    """``--env NAME=VALUE`` items, with ``$KEY`` in a value replaced by ``placeholders[KEY]`` (``$RS``, ``$OTLP``)."""
    env = {}
    for item in items:
        for key, value in placeholders.items():
            item = item.replace(f"${key}", value)
        name, value = item.split("=", 1)  # (no "=": a ValueError, as before)
        env[name] = value
    return env


def start_otlp_sink(procs: list[Proc]) -> str:
    """An OTLP/HTTP collector that keeps nothing (bench/otlp_sink.py); its URL, for OTEL_EXPORTER_OTLP_ENDPOINT."""
    url = f"http://127.0.0.1:{free_port()}"
    procs.append(
        Proc([sys.executable, "-m", "bench.otlp_sink", "--port", url.rsplit(":", 1)[1]], health=url + "/count")
    )
    return url


def service(module: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", module, *extra, "--host", "127.0.0.1", "--port", str(port)]


@dataclass
class Stack:
    redis_url: str
    redis_port: int
    auth_url: str
    rs_url: str
    bff_urls: list[str]
    client_secret: str


def auth_clients(bff_urls: list[str], secret: str) -> str:
    return json.dumps(
        [
            {
                "client_id": "bff",
                "client_secret": secret,
                "redirect_uris": [f"{u}/bff/callback" for u in bff_urls],
                "grant_types": ["authorization_code", "refresh_token"],
                "scope": "openid notes:read notes:write",
                "audience": ["notes"],
            },
            {
                "client_id": "bench",
                "client_secret": secret,
                "redirect_uris": [],
                "grant_types": ["client_credentials"],
                "scope": "notes:read notes:write",
                "audience": ["notes"],
            },
        ]
    )


def bff_env(stack: Stack, public_url: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": stack.redis_url,
        "BFF_ISSUER": stack.auth_url,
        "BFF_CLIENT_ID": "bff",
        "BFF_CLIENT_SECRET": stack.client_secret,
        "BFF_PUBLIC_URL": public_url,
        "BFF_ROUTES": json.dumps({"notes": stack.rs_url}),
        **extra,
    }


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
        elif tag == "input" and a.get("name") and a.get("type") == "hidden":
            self.fields[str(a["name"])] = a.get("value") or ""


def _cookies(response: httpx.Response) -> dict[str, str]:
    jar: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return jar


def login(bff_url: str, username: str, password: str, callback_seconds: list[float] | None = None) -> str:
    """Log in through the BFF like a browser; returns the `Cookie` header value of the session. The time the
    callback took (code exchange, refresh family and session written) is appended to ``callback_seconds``."""
    jar: dict[str, str] = {}
    with httpx.Client(follow_redirects=False, timeout=10) as client:

        def get(url: str, browser_cookies: bool) -> httpx.Response:
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if browser_cookies and jar else {}
            r = client.get(url, headers=headers)
            if browser_cookies:
                jar.update(_cookies(r))
            return r

        r = get(f"{bff_url}/bff/login?return_to=/", True)
        authorize = r.headers["location"]
        form_page = client.get(authorize)
        parser = _FormParser()
        parser.feed(form_page.text)
        action = urljoin(authorize, parser.action or authorize)
        r = client.post(action, data={**parser.fields, "username": username, "password": password})
        if r.status_code != 302:
            raise RuntimeError(f"login failed: {r.status_code} {r.text[:300]}")
        started = time.perf_counter()
        r = get(r.headers["location"], True)
        if callback_seconds is not None:
            callback_seconds.append(time.perf_counter() - started)
        if r.status_code != 302:
            raise RuntimeError(f"callback failed: {r.status_code} {r.text[:300]}")
        session = {k: v for k, v in jar.items() if "session" in k and v}
        if not session:
            raise RuntimeError(f"no session cookie after login: {jar}")
        return "; ".join(f"{k}={v}" for k, v in session.items())


def code_flow_tokens(auth_url: str, secret: str, redirect_uri: str, username: str, password: str) -> dict[str, str]:
    """Authorization code + PKCE straight against the auth server, as the BFF does it: the real token response."""
    import base64
    import hashlib
    import secrets as _secrets
    from urllib.parse import parse_qs, urlsplit

    verifier = _secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        params = {
            "response_type": "code",
            "client_id": "bff",
            "redirect_uri": redirect_uri,
            "scope": "openid notes:read notes:write",
            "state": "bench-state",
            "nonce": "bench-nonce",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        form_page = client.get(f"{auth_url}/oauth/authorize", params=params)
        parser = _FormParser()
        parser.feed(form_page.text)
        action = urljoin(str(form_page.url), parser.action or str(form_page.url))
        r = client.post(action, data={**parser.fields, "username": username, "password": password})
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        r = client.post(
            f"{auth_url}/oauth/token",
            auth=("bff", secret),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
        )
        r.raise_for_status()
        return dict(r.json())


def client_credentials_token(auth_url: str, secret: str) -> str:
    r = httpx.post(
        f"{auth_url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "notes:read"},
        auth=("bench", secret),
        timeout=10,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    headers: Mapping[str, str],
    seconds: int = 5,
    connections: int = 32,
    threads: int = 1,
    script: tuple[str, ...] = (),
) -> WrkResult:
    """``script``: a wrk Lua script and its arguments (e.g. one that sends a fresh header per request)."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    tail = ["-s", script[0], url, "--", *script[1:]] if script else [url]
    out = subprocess.run([*args, *tail], capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return WrkResult(requests, rps, p50, p99, errors)


def redis_commandstats(port: int) -> dict[str, int]:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, check=True
    ).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+(?:\|\w+)?):calls=(\d+)", out)}


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children (nginx's workers), from /proc."""
    wanted = set(pids)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in pids:
                wanted.add(int(entry.name))
    total = 0
    for pid in wanted:
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / TICK
