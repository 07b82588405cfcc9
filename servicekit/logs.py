"""Logs as JSON lines, and the access log: one line per request, with its request id and never a secret.

The access line carries the route template and the path without its query string (where codes, states and
tokens travel), the status, the duration and the request id (the caller's ``X-Request-ID`` when it is sane,
else a new one).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID if it is a plain token (no log injection), else a new random one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return os.urandom(8).hex()


def access(
    logger: logging.Logger,
    method: str,
    route: str,
    path: str,
    status: int,
    seconds: float,
    rid: str,
    client: Any,
) -> None:
    """One access line on ``logger`` (each service has its own ``<package>.access`` logger)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "request",
            extra={
                "fields": {
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "request_id": rid,
                    "client": client[0] if client else None,
                }
            },
        )


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(level: str = "info", *, access_logger: str | None = None, access: bool | None = None) -> dict[str, Any]:
    """A logging dictConfig for uvicorn's ``log_config``: everything as JSON lines on stderr.

    ``access_logger`` names the service's access logger: ``access=True`` turns its lines on, ``False`` off, ``None``
    leaves it at the root level.
    """
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JSONFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {"uvicorn": {"level": level.upper()}, "uvicorn.access": {"level": "WARNING"}},
    }
    if access_logger is not None and access is not None:
        config["loggers"][access_logger] = {"level": "INFO" if access else "WARNING"}
    return config
