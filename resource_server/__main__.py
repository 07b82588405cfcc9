"""``resource-server --host --port``: the sample notes API under uvicorn."""

from __future__ import annotations

import argparse
import logging.config
import os
from collections.abc import Sequence

from servicekit.http import HttpLimits
from servicekit.logs import log_config
from servicekit.server import run_server
from servicekit.version import add_version_flag

from .app import create_app
from .settings import SETTINGS, Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="resource-server", description="The sample notes API (JWT-protected).")
    add_version_flag(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9001, help="port to listen on")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="log level"
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request (JSON lines)")
    parser.add_argument("--config", metavar="FILE", help="a TOML file of settings, under the environment (RS_CONFIG)")
    HttpLimits.add_arguments(parser)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser(
        "config", help="print the effective configuration (secrets redacted) and where each value came from"
    )
    args = parser.parse_args(argv)
    if args.config:
        os.environ["RS_CONFIG"] = args.config
    try:
        if args.command == "config":
            print(SETTINGS.render(os.environ), end="")
            return
        settings = Settings.from_env()
        limits = HttpLimits.from_arguments(args, SETTINGS.layer(os.environ))
    except SettingsError as exc:
        parser.error(str(exc))
    config = log_config(
        args.log_level, access_logger="resource_server.access", access=False if args.no_access_log else None
    )
    logging.config.dictConfig(config)
    for message in SETTINGS.unknown(os.environ):
        logging.getLogger("resource_server.settings").warning(message)
    run_server(create_app(settings), host=args.host, port=args.port, log_config=config, lifespan="on", limits=limits)


if __name__ == "__main__":
    main()
