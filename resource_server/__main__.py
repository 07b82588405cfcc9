"""``resource-server --host --port``: the sample notes API under uvicorn."""

from __future__ import annotations

import argparse
import logging.config
from collections.abc import Sequence

import uvicorn

from .app import create_app
from .logs import log_config
from .settings import Settings, SettingsError

GRACEFUL_SHUTDOWN = 25  # seconds for in-flight requests after SIGTERM (Kubernetes waits 30 before SIGKILL)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="resource-server", description="The sample notes API (JWT-protected).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request (JSON lines)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.error(str(exc))
    config = log_config(args.log_level)
    if args.no_access_log:
        config["loggers"]["resource_server.access"] = {"level": "WARNING"}
    logging.config.dictConfig(config)
    # SIGTERM: uvicorn stops accepting, lets in-flight requests finish (up to the timeout), then runs the lifespan.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=config,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


if __name__ == "__main__":
    main()
