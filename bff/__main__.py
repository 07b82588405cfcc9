"""``bff serve`` runs the BFF; ``bff stack`` runs all three services in one process; ``bff sessions`` lists and ends
a user's sessions (DESIGN §14)."""

from __future__ import annotations

import argparse
import logging.config
import os
import sys

from servicekit.http import HttpLimits
from servicekit.logs import log_config
from servicekit.server import run_server
from servicekit.version import add_version_flag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bff", description="The jwt-bff backend-for-frontend.")
    add_version_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the BFF")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--uds",
        metavar="PATH",
        help="listen on this Unix socket instead of --host and --port: for a proxy on the same host (nginx: server "
        "unix:PATH), which then spares the TCP work; trust its peers for /bff/auth with BFF_TRUSTED_PROXIES=unix",
    )
    serve.add_argument("--workers", type=int, default=1, help="worker processes (sessions live in Redis: any number)")
    serve.add_argument("--log-level", default="info", help="critical, error, warning, info or debug")
    serve.add_argument(
        "--access-log", action="store_true", help="a JSON line per request (off by default: it costs throughput)"
    )
    serve.add_argument("--config", metavar="FILE", help="a TOML file of settings, under the environment (BFF_CONFIG)")
    HttpLimits.add_arguments(serve)
    show = commands.add_parser(
        "config", help="print the effective configuration (secrets redacted) and where each value came from"
    )
    show.add_argument("--config", metavar="FILE", help="a TOML file of settings, under the environment (BFF_CONFIG)")
    check = commands.add_parser(
        "check", help="test the configuration against the provider, the upstreams and Redis (exit 1 if one fails)"
    )
    check.add_argument("--config", metavar="FILE", help="a TOML file of settings, under the environment (BFF_CONFIG)")
    sessions = commands.add_parser("sessions", help="a user's sessions at this BFF: list them, or end them")
    sessions.add_argument(
        "--config", metavar="FILE", help="a TOML file of settings, under the environment (BFF_CONFIG)"
    )
    actions = sessions.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="one JSON object per live session of SUB").add_argument("sub")
    revoke = actions.add_parser("revoke", help="end every session of SUB (or one: --id), revoked at the provider")
    revoke.add_argument("sub")
    revoke.add_argument(
        "--id",
        help="the session's id, as `bff sessions list` and GET /bff/sessions show it; write --id=ID (an id may begin "
        "with '-', which argparse would take for an option)",
    )
    stack = commands.add_parser("stack", help="auth server, resource server and BFF in one process")
    stack.add_argument("--host", default="127.0.0.1", help="address all four servers listen on")
    stack.add_argument("--port", type=int, default=8000, help="the BFF's port")
    stack.add_argument("--auth-port", type=int, default=9000, help="the auth server's port (the issuer)")
    stack.add_argument("--resource-port", type=int, default=9001, help="the sample notes API (audience notes)")
    stack.add_argument("--live-port", type=int, default=9002, help="the second sample API (audience live)")
    stack.add_argument("--access-log", action="store_true", help="a log line per request (off: the stack is quiet)")
    HttpLimits.add_arguments(stack)
    args = parser.parse_args(argv)
    if args.command == "stack":
        from bff import stack as stack_module  # imported only when asked for: it pulls in all three services

        stack_module.main(args)
        return
    if args.config:  # an environment variable, so that the worker processes' factory reads the same file
        os.environ["BFF_CONFIG"] = args.config
    if args.command == "config":
        from bff.settings import SETTINGS
        from servicekit.settings import SettingsError

        try:
            print(SETTINGS.render(os.environ), end="")
        except SettingsError as exc:
            parser.exit(2, f"bff: {exc}\n")
        return
    if args.command == "check":
        from bff.check import command as check_command
        from bff.settings import Settings
        from servicekit.settings import SettingsError

        logging.disable(logging.CRITICAL)  # the lines below say it all; the auth client's log lines would repeat them
        try:
            status, lines = check_command(Settings.from_env())
        except SettingsError as exc:
            parser.exit(2, f"bff: {exc}\n")
        print("\n".join(lines))
        raise SystemExit(status)
    if args.command == "sessions":
        import asyncio

        from bff.errors import BFFError
        from bff.settings import Settings
        from bff.your_sessions import command
        from servicekit.settings import SettingsError

        try:
            status, lines = asyncio.run(command(Settings.from_env(), args.action, args.sub, getattr(args, "id", None)))
        except SettingsError as exc:
            parser.exit(2, f"bff: {exc}\n")
        except BFFError as exc:  # Redis or the provider unreachable: said plainly, no traceback
            parser.exit(1, f"bff: {exc.description}\n")
        for line in lines:
            print(line, file=sys.stderr if status else sys.stdout)
        raise SystemExit(status)
    config = log_config(args.log_level, access_logger="bff.access", access=args.access_log)
    logging.config.dictConfig(config)
    from bff.settings import SETTINGS, Settings, SettingsError

    for message in SETTINGS.unknown(os.environ):
        logging.getLogger("bff.settings").warning(message)
    try:
        settings = Settings.from_env()
        settings.check_client_secret()  # fail fast, naming the variable
        limits = HttpLimits.from_arguments(args, SETTINGS.layer(os.environ))  # HTTP_* may come from the file
    except SettingsError as exc:
        parser.exit(2, f"bff: {exc}\n")
    from bff.frontend import describe
    from servicekit.proxies import UNIX

    logging.getLogger("bff.frontend").info(describe(settings))  # DESIGN §11: say plainly what is served
    listed = settings.trusted_proxies
    if UNIX in listed and not args.uds:
        logging.getLogger("bff.settings").warning(
            "BFF_TRUSTED_PROXIES names unix, but bff serve listens on TCP: no peer is on a Unix socket (serve with "
            "--uds PATH, or drop unix)"
        )
    elif args.uds and listed and UNIX not in listed:
        logging.getLogger("bff.settings").warning(
            "bff serve --uds: peers on the socket have no address, so the addresses in BFF_TRUSTED_PROXIES never "
            "match; name unix there to let the proxy on the socket ask /bff/auth"
        )
    run_server(
        "bff.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=config,
        limits=limits,
        uds=args.uds,
    )


if __name__ == "__main__":
    main()
