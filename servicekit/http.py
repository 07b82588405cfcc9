"""HTTP/1.1 connection limits every service runs with: header size, header time, concurrency.

uvicorn's httptools protocol (the fast one, which ``uvicorn[standard]`` selects) accepts headers of any size and
waits forever for them: one client could hold a megabyte per connection, or drip a header line a minute and keep
a connection open for good (slowloris). ``LimitedHttpProtocol`` adds three bounds, set by ``HttpLimits``:

- the request line and headers of one request may take ``max_header_bytes``; beyond that the answer is
  ``431 Request Header Fields Too Large`` (RFC 6585 §5) and the connection is closed, before more is buffered;
- they must arrive within ``header_timeout`` seconds of the connection opening (or of the request's first byte on
  a kept-alive connection); otherwise ``408 Request Timeout`` (RFC 9110 §15.5.9) and the connection is closed;
- beyond ``max_concurrency`` open connections or requests in flight, a request is answered ``503`` with
  ``Retry-After`` (JSON, as every other error of ours) instead of being run;
- a request body may not fall silent for ``body_timeout`` seconds (``HTTP_BODY_TIMEOUT``, nginx's
  ``client_body_timeout``); otherwise the connection is closed (found attacking the stack: a body announced and
  never sent held its connection, its request and its place under the cap forever).

(h11, uvicorn's other parser, bounds header size with ``h11_max_incomplete_event_size`` but has no header timeout
either; it is also several times slower, so the services keep httptools.)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from .settings import Declarations, Setting, SettingsError, integer, number

log = logging.getLogger(__name__)

_END_OF_HEADERS = b"\r\n\r\n"


HTTP_SETTINGS = (
    Setting(
        "HTTP_MAX_HEADER_BYTES",
        "16384",
        "Request line + headers above this many bytes get 431 (also --max-header-bytes).",
        integer(minimum=1024),
        kind="integer",
    ),
    Setting(
        "HTTP_HEADER_TIMEOUT",
        "10",
        "Seconds a client has to send its headers, else 408 and closed (also --header-timeout).",
        number(positive=True),
        kind="number",
    ),
    Setting(
        "HTTP_MAX_CONCURRENCY",
        "2000",
        "Connections or requests in flight per process beyond which requests get 503; 0: no cap "
        "(also --max-concurrency).",
        integer(),
        kind="integer",
    ),
    Setting(
        "HTTP_BODY_TIMEOUT",
        "30",
        "Seconds a request body may fall silent before the connection is closed; 0: no limit.",
        number(),
        kind="number",
    ),
)
HTTP = Declarations("http", "", HTTP_SETTINGS)


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 16_384  # request line + headers; Node's default, twice nginx's one buffer of 8 KiB
    header_timeout: float = 10.0  # seconds from connection (or a request's first byte) to the end of its headers
    max_concurrency: int = 2_000  # open connections or in-flight requests per process; 0: no cap
    body_timeout: float = 30.0  # seconds a request body may fall silent (nginx's client_body_timeout); 0: none

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HttpLimits:
        values = HTTP.read(os.environ if env is None else env)
        return cls(
            max_header_bytes=values["http_max_header_bytes"],
            header_timeout=values["http_header_timeout"],
            max_concurrency=values["http_max_concurrency"],
            body_timeout=values["http_body_timeout"],
        )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
        """``--max-header-bytes``, ``--header-timeout`` and ``--max-concurrency``, defaults from the environment
        (read when the command line is parsed). ``suppress``: a sub-command repeating the options leaves the values
        parsed before it alone."""
        defaults: Any = argparse.SUPPRESS if suppress else None
        parser.add_argument(
            "--max-header-bytes",
            type=int,
            default=defaults,
            help="request line + headers above this get 431 (env HTTP_MAX_HEADER_BYTES, default 16384)",
        )
        parser.add_argument(
            "--header-timeout",
            type=float,
            default=defaults,
            help="seconds a client has to send its headers, else 408 and closed (env HTTP_HEADER_TIMEOUT, default 10)",
        )
        parser.add_argument(
            "--max-concurrency",
            type=int,
            default=defaults,
            help="connections or requests in flight beyond which requests get 503 (env HTTP_MAX_CONCURRENCY, "
            "default 2000; 0: no cap)",
        )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> HttpLimits:
        """The limits the command line gives, the environment's (or the defaults) for the options it leaves out."""
        base = cls.from_env(env)
        limits = cls(
            _given(args, "max_header_bytes", base.max_header_bytes),
            _given(args, "header_timeout", base.header_timeout),
            _given(args, "max_concurrency", base.max_concurrency),
            base.body_timeout,
        )
        if limits.max_header_bytes < 1024 or not limits.header_timeout > 0 or limits.max_concurrency < 0:
            raise SettingsError("--max-header-bytes must be >= 1024, --header-timeout > 0, --max-concurrency >= 0")
        return limits


def _given(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def _plain_response(status: bytes, body: dict[str, str], extra: bytes = b"") -> bytes:
    payload = json.dumps(body).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncache-control: no-store\r\n" + extra
        + b"content-length: " + str(len(payload)).encode() + b"\r\nconnection: close\r\n\r\n" + payload
    )  # fmt: skip


TOO_LARGE = _plain_response(
    b"431 Request Header Fields Too Large",
    {"error": "request_header_fields_too_large", "error_description": "The request headers are too large."},
)
TIMEOUT = _plain_response(
    b"408 Request Timeout",
    {"error": "request_timeout", "error_description": "The request headers took too long."},
)
BUSY = {"error": "temporarily_unavailable", "error_description": "The server is at its concurrency limit."}


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps(BUSY).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"retry-after", b"1"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# A raw route's answer: status, headers (lower-case names) and body; None hands the request to the ASGI app.
RawAnswer = tuple[int, list[tuple[bytes, bytes]], bytes] | None
RawHandler = Callable[[dict[str, Any]], Awaitable[RawAnswer]]
_UNSAFE = re.compile(rb"[\x00\r\n]")


def _cancel(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """Cancel ``timer`` if set; returns None, to store in its place."""
    if timer is not None:
        timer.cancel()
    return None


class _HeadersTooLarge(Exception):
    """Raised in a parser callback when a request's line and headers pass ``max_header_bytes``."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of ``HttpLimits`` (see the module docstring)."""

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._reading_headers = True  # the bytes arriving now belong to a request line or headers
        self._header_bytes = 0
        self._tail = b""  # the last bytes of header data seen, for an end of headers split across reads
        # the same limit counted by the parser, request by request: what follows an end of headers in one read (a
        # pipelined request, or one behind empty lines) is not in the count above
        self._parsed_header_bytes = 0
        self._too_large = False
        self._headers_pending = False  # a request has begun and its headers are not all in
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0  # loop time of the last body bytes of the request being read

    # The header timer: armed when a connection opens and when a request begins, disarmed when its headers end.

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_timed_out)

    def _answering(self) -> bool:
        """Whether an answer is being written on this connection (a request pipelined behind it waits)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _disarm(self) -> None:
        self._header_timer = _cancel(self._header_timer)

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._answering():  # the app's next send returns quietly instead of writing to a closed transport
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        else:  # nothing of ours is being written on it
            self.transport.write(TIMEOUT)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.raw_routes: Mapping[bytes, RawHandler] = getattr(self.app, "raw_routes", None) or {}
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_done()
        super().connection_lost(exc)

    # The body timer: armed when the headers of a request with a body end, pushed back by each read of it, disarmed
    # when the body is complete. A client announcing a body and then sending nothing, or a byte now and then, would
    # otherwise hold its connection and request (and its place under the concurrency cap) for good.

    def _body_started(self) -> None:
        self._body_seen = self.loop.time()
        self._body_timer = _cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_silent)

    def _body_done(self) -> None:
        self._body_timer = _cancel(self._body_timer)

    def _body_silent(self) -> None:
        self._body_timer = None
        # Silence that is ours is no client's fault: reading paused because the app is not reading (backpressure:
        # the BFF's upstream is slow to take an upload), or a 100-continue the app has not asked for yet.
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._body_seen = self.loop.time()
        quiet = self.loop.time() - self._body_seen
        if quiet < self.limits.body_timeout:  # bytes came meanwhile: wait out the rest (no timer per read)
            self._body_timer = self.loop.call_later(self.limits.body_timeout - quiet, self._body_silent)
            return
        if not self.transport.is_closing():
            log.info("request body silent for %.0f s: connection closed", quiet)
            self.transport.close()  # the app reads http.disconnect (servicekit.client_gone)

    def data_received(self, data: bytes) -> None:
        if self._body_timer is not None:
            self._body_seen = self.loop.time()
        if self._reading_headers:
            # the header timer, also for bytes that begin no request (empty lines: llhttp skips them without a
            # message begun), which cancel uvicorn's keep-alive timer below (found attacking: one CRLF after a kept
            # alive answer left the connection open with no timer at all)
            if not self._answering():
                self._arm()
            # Count only what belongs to the headers (a body may follow in the same read), and refuse before the
            # parser buffers more than the limit.
            seen = self._tail + data
            end = seen.find(_END_OF_HEADERS)
            header_part = len(data) if end == -1 else max(0, end + len(_END_OF_HEADERS) - len(self._tail))
            self._header_bytes += header_part
            self._tail = seen[-3:] if end == -1 else b""
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse_too_large()
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._too_large:
                self._refuse_too_large()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)

    def _refuse_too_large(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            if not self._answering():
                self.transport.write(TOO_LARGE)
                self.transport.close()
            else:  # a request before it (pipelined) is being answered: that answer first, then this one's 431
                self.flow.pause_reading()
                self._too_large = True

    def on_response_complete(self) -> None:
        # a request refused as too large behind this one: its 431 once every request before it is answered (those
        # queued in the pipeline too, which uvicorn starts here)
        if self._too_large and not self.pipeline and not self.transport.is_closing():
            self.transport.write(TOO_LARGE)
            self.transport.close()
            return
        super().on_response_complete()
        if self._headers_pending and not self.pipeline:
            self._arm()  # a request that began while this answer was written: its header time starts now

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_header_bytes = 0
        self._headers_pending = True
        # its header time starts now, or once the answer being written is done (on_response_complete): a request
        # pipelined during a long answer (a stream) is not timed out meanwhile, which cut that answer (found
        # attacking: the stream lost its end, and the app's next write raised on the closed transport)
        if not self._answering():
            self._arm()

    def _count(self, size: int) -> None:
        if not self._reading_headers:  # a chunked body's trailers (llhttp reports them as headers): the body timeout's
            return
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self.limits.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge  # the parser stops (httptools: HttpParserCallbackError), data_received answers 431

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._headers_pending = False
        self._reading_headers = False
        self._header_bytes = 0
        self._tail = b""
        cap = self.limits.max_concurrency
        if cap and (len(self.connections) > cap or len(self.tasks) >= cap):
            app, self.app = self.app, _busy  # uvicorn reads self.app when it starts the request's task
            log.warning("concurrency limit reached (%d): 503", cap)
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        handler = self.raw_routes.get(self.url) if self.raw_routes else None
        if handler is not None and self._raw(handler):
            return
        super().on_headers_complete()
        if self.limits.body_timeout and any(n in (b"content-length", b"transfer-encoding") for n, _ in self.headers):
            self._body_started()

    # Raw routes: an app may name exact request targets (``app.raw_routes``: target -> handler) that are answered
    # without the ASGI machinery — no app, middleware or send messages; the handler returns the whole answer, which
    # leaves in one write. Only a request without a body, not pipelined behind another and not an upgrade is taken
    # this way; the handler may also decline (None), and the request then goes to the app as any other. The BFF's
    # /bff/auth is one (bff.app): it is every forward-auth question of an ingress.

    def _raw(self, handler: RawHandler) -> bool:
        if self.parser.should_upgrade() or self._answering():
            return False
        for name, value in self.headers:
            if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                return False
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        http_version = self.parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = self.url.decode("ascii")
        scope["raw_path"] = self.url
        scope["query_string"] = b""
        self.cycle = cycle = RequestResponseCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        task = self.loop.create_task(self._run_raw(handler, cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        return True

    async def _run_raw(self, handler: RawHandler, cycle: RequestResponseCycle) -> None:
        try:
            answer = await handler(cycle.scope)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - the app answers it, its error handling included
            answer = None
        if answer is None:
            await cycle.run_asgi(self.app)
            return
        if cycle.disconnected:
            return
        status, headers, body = answer
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in headers:
            if _UNSAFE.search(value):  # never a header split by a value (uvicorn's own check on every header)
                await cycle.run_asgi(self.app)
                return
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        cycle.response_started = cycle.response_complete = True
        self.transport.write(b"".join(content))
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()

    def on_message_complete(self) -> None:
        self._body_done()
        super().on_message_complete()
        self._reading_headers = True  # what comes next on this connection is the next request's headers


def http_protocol(limits: HttpLimits) -> Any:
    """uvicorn's ``http`` setting for these limits (a picklable factory: ``--workers`` starts fresh processes)."""
    return functools.partial(LimitedHttpProtocol, limits=limits)
