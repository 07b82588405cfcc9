"""Writes that must survive a failover: the write, then ``WAIT`` for the replicas, on one connection.

Redis replicates asynchronously: a master that dies right after answering a write may take the write with it, and
the promoted replica never had it. For the few writes a user is told about — a session created, a refresh saved, a
refresh family started or rotated, a logout — ``Durable.write`` sends the commands and ``WAIT numreplicas timeout``
in one pipeline on one connection (``WAIT`` counts the replicas that have the connection's own writes, so it must
share the connection), and answers only when the replicas have them. Fewer replicas in time is ``NotReplicated``,
a ``ConnectionError``: the request gets 503 and is not acknowledged (the write itself may have landed, which is
safe: an unacknowledged session is never handed out, and a saved refresh is found by the next request).

``REDIS_WAIT_REPLICAS`` (``WaitPolicy``): ``auto`` (the default) waits for every replica the master has online
(connected and done syncing: ``INFO replication``, asked at most once a second per master), so a Redis without
replicas pays nothing and never blocks; a number waits for that many, and answers 503 while fewer are online; ``0``
never waits.

On a Redis Cluster a write that waits goes to the master of the key's slot through a plain client of that node (a
cluster pipeline cannot carry ``WAIT``, which has no key); a ``MOVED``/``ASK`` or a dead node there (a slot moved, a
failover) is a 503, and the cluster client re-reads the layout in the background. Scripts are queued with ``EVAL``
(the server caches them by digest), which every kind of pipeline carries. All commands of one
write must be on the slot of ``key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redis import REDIS_TIMEOUT
from .settings import Declarations, Setting, SettingsError, integer

REPLICAS_TTL = 1.0  # seconds a master's replica count is trusted (INFO is cheap; a stale count costs one 503 at most)


class NotReplicated(RedisConnectionError):
    """Fewer replicas than required acknowledged a write in time: not durable, so not acknowledged (503).

    The master did run the commands: ``results`` holds their answers, for a caller whose write has consequences
    that must follow even so (a deletion whose retry would find nothing left to delete)."""

    def __init__(self, message: str, results: list[Any] | None = None) -> None:
        super().__init__(message)
        self.results = results or []


@dataclass(frozen=True)
class WaitPolicy:
    replicas: int | None = None  # None: auto, every replica connected now
    timeout_ms: int = 1000  # below the client's socket timeout (REDIS_TIMEOUT)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WaitPolicy:
        values = WAIT.read(env)
        return cls(values["redis_wait_replicas"], values["redis_wait_timeout"])


def _replicas(label: str, raw: str) -> int | None:
    value = raw.strip().lower()
    if value == "auto":
        return None
    if value.isdigit():
        return int(value)
    raise SettingsError(f"{label} must be auto or a number of replicas, got {value!r}")


def _wait_timeout(label: str, raw: str) -> int:
    timeout: int = integer(minimum=1)(label, raw)
    if timeout >= REDIS_TIMEOUT * 1000:
        raise SettingsError(f"{label} must be below {int(REDIS_TIMEOUT * 1000)} ms, got {timeout}")
    return timeout


WAIT_SETTINGS = (
    Setting(
        "REDIS_WAIT_REPLICAS",
        "auto",
        "Replicas that must acknowledge a durable write (WAIT) before it counts: auto (every replica connected "
        "now) or a number.",
        _replicas,
    ),
    Setting(
        "REDIS_WAIT_TIMEOUT",
        str(WaitPolicy.timeout_ms),
        "Milliseconds a durable write waits for its replicas (below the 2000 ms Redis timeout).",
        _wait_timeout,
        kind="integer",
    ),
)
WAIT = Declarations("redis", "", WAIT_SETTINGS)


Queue = Callable[[Any], None]  # adds commands to a pipeline (scripts with EVAL: every pipeline kind takes it)


class Durable:
    """``await durable.write(key, lambda pipe: pipe.set(key, value))`` → the results of the queued commands."""

    def __init__(self, client: Any, policy: WaitPolicy | None = None) -> None:
        self.client = client
        # fakeredis (`bff stack`'s embedded store) has no replicas to wait for
        embedded = type(client).__module__.startswith("fakeredis")
        self.policy = WaitPolicy(replicas=0) if embedded else policy or WaitPolicy()
        self.cluster = hasattr(client, "get_node_from_key")
        self._nodes: dict[tuple[str, int], aioredis.Redis] = {}
        self._replicas: dict[Any, tuple[int, float]] = {}
        self._relearning: asyncio.Task[None] | None = None

    async def _node(self, key: str) -> Any:
        """The cluster node holding ``key`` (None off a cluster)."""
        if not self.cluster:
            return None
        await self.client.initialize()  # a no-op once the cluster's layout is known
        return self.client.get_node_from_key(key)

    def _node_client(self, node: Any) -> aioredis.Redis:
        """A plain client of one cluster node: its pipelines run on one connection, WAIT included."""
        address = (node.host, node.port)
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = aioredis.Redis(
                host=node.host,
                port=node.port,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
            )
        return client

    async def _required(self, node: Any) -> int:
        if self.policy.replicas is not None:
            return self.policy.replicas
        name = None if node is None else (node.host, node.port)
        known = self._replicas.get(name)
        now = time.monotonic()
        if known is not None and known[1] > now:
            return known[0]
        if node is None:
            info = await self.client.info("replication")
        else:
            info = await self.client.info("replication", target_nodes=node)
        if info.get("role") != "master":  # a demoted master (failover): not where writes go any more
            raise RedisConnectionError(f"the Redis node written to is a {info.get('role')} now")
        # Only replicas done with their initial sync acknowledge: one still loading would make every write wait out
        # its timeout (a 503) for as long as the sync takes.
        count = sum(
            1 for name, value in info.items() if name.startswith("slave") and isinstance(value, dict)
            and value.get("state") == "online"
        )  # fmt: skip
        self._replicas[name] = (count, now + REPLICAS_TTL)
        return count

    async def write(self, key: str, queue: Queue) -> list[Any]:
        """Run the commands ``queue`` adds to a pipeline (all on ``key``'s slot), durably; their results."""
        node = await self._node(key)
        required = await self._required(node)
        # A cluster pipeline carries neither WAIT (no key) nor a script: wait through a plain client of the node
        client = self._node_client(node) if node is not None and required else self.client
        try:
            async with client.pipeline(transaction=False) as pipe:
                queue(pipe)
                if required:
                    pipe.execute_command("WAIT", required, self.policy.timeout_ms)
                results = list(await pipe.execute())
        except ResponseError as exc:
            if node is not None and str(exc).startswith(("MOVED", "ASK")):
                self._relearn_layout()
                raise RedisConnectionError(f"slot moved: {exc}") from exc
            raise
        except (RedisConnectionError, RedisTimeoutError):
            if node is not None:  # the node may be gone (failover): the cluster client must learn who serves now
                self._relearn_layout()
            raise
        if not required:
            return results
        acked = results.pop()
        if acked < required:
            self._replicas.pop(None if node is None else (node.host, node.port), None)  # ask again next time
            raise NotReplicated(
                f"{acked} of {required} replicas acknowledged within {self.policy.timeout_ms} ms", results
            )
        return results

    def _relearn_layout(self) -> None:
        """Re-read the cluster's slot layout in the background (a dead node's timeouts stay off this request)."""
        if self._relearning is None or self._relearning.done():

            async def relearn() -> None:
                with contextlib.suppress(Exception):
                    await self.client.nodes_manager.initialize()

            self._relearning = asyncio.get_running_loop().create_task(relearn())

    async def aclose(self) -> None:
        if self._relearning is not None:
            self._relearning.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relearning
        for client in self._nodes.values():
            await client.aclose()
        self._nodes.clear()
