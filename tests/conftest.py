"""Shared fixtures: a private redis-server on a free port, and services on real sockets.

Nothing here touches the machine's own Redis on 6379. A missing ``redis-server`` is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.processes import reap, terminate

REPO = Path(__file__).resolve().parent.parent


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out on its own (to ``connect`` and to ``bind`` on port 0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_FLOOR = 10000  # above the well-known and registered ports a machine's own services tend to use
_PORT_CEILING = max(_PORT_FLOOR + 5000, _ephemeral_floor())


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port taken with ``bind(0)`` comes from the ephemeral range, and between closing it here and the server binding
    it, any outgoing connection on the machine (ours, or another test run's) may get it as its local port: a server
    then failed with EADDRINUSE under load. Ports below that range are never given out by the kernel on its own.
    """
    import random

    for _ in range(200):
        port = random.randrange(_PORT_FLOOR, _PORT_CEILING)  # noqa: S311
        if _bindable(port):
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class RedisServer:
    """A private redis-server with append-only persistence, which tests may stop and restart with its data."""

    port: int = field(default_factory=free_port)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jwt-bff-redis-")))
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()  # more redis-server options (a cluster node's)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: the Redis tests cannot run (install it; never skip them)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_for_pong()
        return self

    def _wait_for_pong(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def start_sentinel(self) -> RedisServer:
        """Start as ``redis-server <conf> --sentinel`` (``extra`` holds both)."""
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: the Sentinel tests cannot run (install it; never skip them)")
        self.proc = subprocess.Popen([exe, *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_for_pong()
        return self

    def stop(self) -> None:
        terminate(self.proc)  # SIGTERM: redis flushes the append-only file and exits
        self.proc = None

    def flushall(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True, capture_output=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the whole run. Use ``redis_url`` in tests: it flushes between tests."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def redis_factory() -> Iterator[Any]:
    """Start extra private Redis servers (for tests that stop or restart one); all are removed afterwards."""
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer().start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


# --- services on real sockets -------------------------------------------------------------------------------


class _QuickStopServer(uvicorn.Server):
    """uvicorn looks at ``should_exit`` every 0.1 s, and its shutdown waits 0.1 s and then polls every 0.1 s for the
    connections to close; the suite stops hundreds of servers, so this one does each every 0.01 s (``on_tick`` still
    runs every 0.1 s: it keeps the Date header and the request counters). The same steps otherwise, in order."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        for server in self.servers:  # stop accepting
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):  # ask every connection to finish
            connection.shutdown()
        await asyncio.sleep(0.01)
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                for pending in (self.server_state.connections, self.server_state.tasks):  # each, until empty
                    while True:
                        if not pending or self.force_exit:
                            break
                        await asyncio.sleep(0.01)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            for _ in range(10):
                await asyncio.sleep(0.01)
                if self.should_exit:
                    break
            counter = (counter + 1) % 864000
            should_exit = await self.on_tick(counter)


class ServerThread:
    """Runs an ASGI app under uvicorn in a thread, on a real socket on 127.0.0.1."""

    def __init__(self, app: Any, port: int | None = None, ws: str = "none") -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws=ws,  # "websockets-sansio" (what `bff serve` runs) for tests that need WebSockets
            timeout_graceful_shutdown=2,
        )
        self.server = _QuickStopServer(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def request_stop(self) -> None:
        self.server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        self.thread.join(10)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[ServerThread]:
    """``with serve(create_app(settings)) as srv: httpx.get(srv.url + "/healthz")``"""
    server = ServerThread(app, port).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    """Start ASGI apps on real sockets; all are stopped at the end of the test."""
    servers: list[ServerThread] = []

    def start(app: Any, port: int | None = None, ws: str = "none") -> ServerThread:
        server = ServerThread(app, port, ws).start()
        servers.append(server)
        return server

    yield start
    # All at once: each uvicorn shutdown is mostly waiting (a 0.1 s tick, then a 0.1 s grace), and one after another
    # those waits added up to ~0.4 s of teardown per test.
    for server in reversed(servers):
        server.request_stop()
    for server in reversed(servers):
        server.thread.join(10)


class ServiceProcess:
    """A service command (``python -m bff serve …``) in its own process, on a real socket."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], port: int | None = None, health_path: str = "/healthz"
    ) -> None:
        self.port = port or free_port()
        self.args = args
        self.env = {**os.environ, **env}
        self.health_path = health_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self.log = tempfile.NamedTemporaryFile(prefix="jwt-bff-svc-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, *self.args, "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited with {self.proc.returncode}:\n{self.output()}")
            if self._healthy():
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.args} did not become healthy:\n{self.output()}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        if "--uds" in self.args:  # bff serve --uds PATH: it listens on that socket alone
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(1)
                    sock.connect(self.args[self.args.index("--uds") + 1])
                    sock.sendall(f"GET {self.health_path} HTTP/1.0\r\nHost: bff\r\n\r\n".encode())
                    return sock.recv(64).startswith(b"HTTP/1.1 200 ")
            except OSError:
                return False
        try:
            return httpx.get(self.url + self.health_path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def request_stop(self) -> None:
        """SIGTERM without waiting (process_factory stops all its processes at once)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self._stopping = True

    def stop(self) -> None:
        if self._stopping:
            reap(self.proc)  # a second SIGTERM could cut the graceful shutdown short
        else:
            terminate(self.proc)
        self._stopping = False
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@pytest.fixture
def process_factory() -> Iterator[Any]:
    """Start service commands as processes; all are stopped at the end of the test."""
    procs: list[ServiceProcess] = []

    def start(
        args: list[str], env: Mapping[str, str], port: int | None = None, health_path: str = "/healthz"
    ) -> ServiceProcess:
        proc = ServiceProcess(args, env, port, health_path).start()
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.request_stop()  # all at once (see server_factory)
    for proc in reversed(procs):
        proc.cleanup()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- Redis Cluster ------------------------------------------------------------------------------------------


def _free_cluster_port() -> int:
    """A port p with p and p+10000 (the cluster bus) both free, both below the ephemeral range (see free_port)."""
    import random

    for _ in range(200):
        port = random.randrange(_PORT_FLOOR, max(_PORT_FLOOR + 1000, _PORT_CEILING - 10000))  # noqa: S311
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisCluster:
    """A real 3-master Redis Cluster on loopback, with append-only files; ``replicas=1`` adds a replica per master
    (six nodes) for failover tests."""

    nodes: list[RedisServer] = field(default_factory=list)
    replicas: int = 0
    node_timeout: int = 2000  # ms: a master unreachable this long is failed, and its replica promoted

    @property
    def url(self) -> str:
        """`REDIS_URL` with every node, comma-separated (the services' cluster form)."""
        return ",".join(f"redis://127.0.0.1:{n.port}/0" for n in self.nodes)

    def start(self) -> RedisCluster:
        exe = shutil.which("redis-server")
        if exe is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server/redis-cli are not installed: the cluster tests cannot run")
        for _ in range(3 * (1 + self.replicas)):
            node = RedisServer(
                port=_free_cluster_port(),
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout),
                    "--appendfsync",
                    "everysec",
                    "--repl-diskless-sync-delay",  # a replica syncs at once, not after 5 s
                    "0",
                    "--repl-diskless-load",  # and an empty one loads from the socket, not through the disk
                    "on-empty-db",
                ),
            )
            self.nodes.append(node.start())
        create = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            self.cleanup()
            pytest.fail(f"redis-cli --cluster create failed: {create.stdout}{create.stderr}")
        deadline = time.monotonic() + 20
        while True:
            info = subprocess.run(
                ["redis-cli", "-p", str(self.nodes[0].port), "CLUSTER", "INFO"], capture_output=True, text=True
            ).stdout
            if "cluster_state:ok" in info and self._replicas_linked():
                return self
            if time.monotonic() > deadline:
                self.cleanup()
                pytest.fail(f"the cluster did not reach state ok: {info}")
            time.sleep(0.1)

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def _replicas_linked(self) -> bool:
        """Every replica says its link to its master is up (WAIT counts only such replicas)."""
        linked = 0
        for node in self.nodes:
            info = subprocess.run(
                ["redis-cli", "-p", str(node.port), "INFO", "replication"], capture_output=True, text=True
            ).stdout
            linked += "role:slave" in info and "master_link_status:up" in info
        return linked == 3 * self.replicas

    def roles(self) -> dict[int, str]:
        """Port → "master" or "slave", as each live node says of itself."""
        out = {}
        for node in self.nodes:
            if node.proc is not None:
                role = subprocess.run(
                    ["redis-cli", "-p", str(node.port), "ROLE"], capture_output=True, text=True, timeout=5
                ).stdout.split()
                if role:
                    out[node.port] = role[0]
        return out

    def replica_of(self, master: RedisServer) -> RedisServer:
        for node in self.nodes:
            if node is not master and node.proc is not None:
                info = subprocess.run(
                    ["redis-cli", "-p", str(node.port), "INFO", "replication"], capture_output=True, text=True
                ).stdout
                if f"master_port:{master.port}" in info:
                    return node
        raise AssertionError(f"no replica of {master.port}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(n.port), "CLUSTER", "INFO"], capture_output=True, text=True
                ).stdout
                for n in self.nodes
                if n.proc is not None
            ]
            if all("cluster_state:ok" in s for s in states):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the cluster did not reach state ok: {states}")
            time.sleep(0.1)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def redis_cluster_with_replicas() -> Iterator[RedisCluster]:
    """A fresh 3-master, 3-replica cluster per test (a failover test leaves it changed), fast node timeout."""
    cluster = RedisCluster(replicas=1, node_timeout=1000).start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    redis_cluster.flushall()
    return redis_cluster.url


# --- Redis Sentinel -------------------------------------------------------------------------------------------

SENTINEL_MASTER = "mymaster"
# a replica syncs at once, not after 5 s, and an empty one loads from the socket, not through a file on the disk
_QUICK_SYNC = ("--repl-diskless-sync-delay", "0", "--repl-diskless-load", "on-empty-db")


@dataclass
class RedisSentinel:
    """A master, a replica and three sentinels (quorum 2) on loopback, tuned to fail over within a few seconds."""

    master: RedisServer = field(default_factory=lambda: RedisServer(extra=_QUICK_SYNC))
    replica: RedisServer | None = None
    sentinels: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """`REDIS_URL` in the Sentinel form the services take."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_MASTER}/0"

    def start(self) -> RedisSentinel:
        self.master.start()
        self.replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(self.master.port), *_QUICK_SYNC)).start()
        for _ in range(3):
            node = RedisServer()
            conf = node.dir / "sentinel.conf"
            conf.write_text(
                f"port {node.port}\nbind 127.0.0.1\nprotected-mode no\ndir {node.dir}\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 3000\n"
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
            )
            node.extra = (str(conf), "--sentinel")
            self.sentinels.append(node.start_sentinel())
        self.wait(lambda: self.replicas_seen() >= 1 and self.linked(), "the replica and the sentinels to link up")
        return self

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5
        ).stdout.strip()

    def master_port(self) -> int:
        """The master's port as the sentinels see it now."""
        for sentinel in self.sentinels:
            answer = self.cli(sentinel.port, "SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER).split()
            if len(answer) == 2:
                return int(answer[1])
        raise AssertionError("no sentinel answers")

    def replicas_seen(self) -> int:
        info = self.cli(self.master.port, "INFO", "replication")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return int(fields.get("connected_slaves", "0"))

    def linked(self) -> bool:
        for sentinel in self.sentinels:
            info = self.cli(sentinel.port, "SENTINEL", "master", SENTINEL_MASTER).split()
            fields = dict(zip(info[::2], info[1::2], strict=False))
            if int(fields.get("num-other-sentinels", "0")) < 2 or int(fields.get("num-slaves", "0")) < 1:
                return False
        return True

    def wait(self, condition: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.1)

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master (no goodbye, nothing flushed); returns it."""
        port = self.master_port()
        dead = next(n for n in (self.master, self.replica) if n is not None and n.port == port)
        assert dead.proc is not None
        dead.proc.kill()
        dead.proc.wait()
        dead.proc = None
        return dead

    def cleanup(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            if node is not None:
                node.cleanup()


@pytest.fixture
def redis_sentinel() -> Iterator[RedisSentinel]:
    """A fresh master + replica + three sentinels per test (a failover test leaves them changed)."""
    setup = RedisSentinel().start()
    yield setup
    setup.cleanup()


# --- logs -----------------------------------------------------------------------------------------------------


class JSONLines(logging.Handler):
    """Collects what a logger writes, formatted by the service's own JSON formatter and parsed back."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_log() -> Iterator[Any]:
    """``lines = json_log(ACCESS, JSONFormatter())``: the logger's lines at INFO, as parsed JSON, for this test."""
    attached: list[tuple[logging.Logger, JSONLines, int]] = []

    def capture(logger: logging.Logger, formatter: logging.Formatter) -> list[dict[str, Any]]:
        handler = JSONLines(formatter)
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler.lines

    yield capture
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)
