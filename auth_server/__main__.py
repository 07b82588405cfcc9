"""``auth-server``: serve, ``keys rotate``, ``users add``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from servicekit.http import HttpLimits
from servicekit.version import add_version_flag

from .errors import AuthServerError, SignUpError
from .settings import SETTINGS, Settings, SettingsError

T = TypeVar("T")


def _serve(settings: Settings, host: str, port: int, limits: HttpLimits) -> int:
    import logging.config

    from servicekit.logs import log_config
    from servicekit.server import run_server

    from .app import create_app

    config = log_config("info")
    logging.config.dictConfig(config)
    for message in SETTINGS.unknown(os.environ):
        logging.getLogger("auth_server.settings").warning(message)
    try:
        app = create_app(settings)
    except AuthServerError as exc:  # a bad key file or an unwritable empty keys directory
        print(f"auth-server: {exc}", file=sys.stderr)
        return 2
    run_server(app, host=host, port=port, log_config=config, limits=limits)
    return 0


def _rotate(settings: Settings) -> int:
    from .keys import rotate

    new, removed = rotate(
        settings.keys_dir, settings.signing_alg, settings.key_retention, settings.key_activation_delay
    )
    print(
        f"new signing key {new.kid} ({new.alg}) in {new.path}; published now, signing in "
        f"{settings.key_activation_delay} s (AUTH_KEY_ACTIVATION_DELAY)"
    )
    for path in removed:
        print(f"removed expired key {path}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise SystemExit("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


async def _add_user(settings: Settings, username: str, password: str) -> str:
    from servicekit.redis import open_redis

    from .users import UserStore

    redis = open_redis(settings.redis_url, settings.redis_cluster)
    try:
        store = UserStore(redis)
        user = await store.create(username, password)
        return user.sub
    finally:
        await redis.aclose()


async def _on_factors(settings: Settings, act: Callable[[Any, Any], Awaitable[T]]) -> T:
    """``act(factors, redis)`` on the users' second factors (``mfa.SecondFactors``, with AUTH_FACTOR_KEYS)."""
    from servicekit.redis import open_redis

    from .mfa import SecondFactors

    redis = open_redis(settings.redis_url, settings.redis_cluster)
    try:
        return await act(SecondFactors(redis, settings.issuer, settings.factor_keys), redis)
    finally:
        await redis.aclose()


async def _with_factors(settings: Settings, username: str, act: Callable[[Any, Any], Awaitable[T]]) -> T:
    """``act(factors, user)`` on ``username``'s second factors; LookupError for an unknown user."""
    from .users import UserStore

    async def on_user(factors: Any, redis: Any) -> T:
        user = await UserStore(redis).find(username)
        if user is None:
            raise LookupError(username)
        return await act(factors, user)

    return await _on_factors(settings, on_user)


async def _totp(settings: Settings, username: str) -> tuple[str, list[str]]:
    """Turn TOTP on for ``username`` (a new secret replaces any old one) with fresh recovery codes: (the otpauth://
    URI, the codes). LookupError for an unknown user."""

    async def turn_on(factors: Any, user: Any) -> tuple[str, list[str]]:
        secret = await factors.start_totp(user.sub)
        await factors.activate_totp(user.sub, secret)
        return factors.uri(secret, user.username), await factors.new_recovery_codes(user.sub)

    return await _with_factors(settings, username, turn_on)


async def _mfa_reset(settings: Settings, username: str) -> dict[str, Any]:
    """Remove every second factor of ``username``; returns what was enrolled. LookupError for an unknown user."""
    return await _with_factors(settings, username, lambda factors, user: factors.remove_all(user.sub))


async def _totp_reseal(settings: Settings, unseal: bool = False) -> dict[str, int]:
    """Seal every TOTP secret with the first of AUTH_FACTOR_KEYS, or (``unseal``) write each back in the clear
    (``mfa.SecondFactors.reseal_all``)."""
    return await _on_factors(settings, lambda factors, _: factors.reseal_all(unseal=unseal))


async def _revoke_user(settings: Settings, username: str) -> tuple[int, int]:
    """End every SSO session and login of ``username``, telling each client on its back channel (DESIGN §6).
    Returns (SSO sessions, logins) that were alive; LookupError for an unknown user."""
    from servicekit.redis import open_redis

    from .backchannel import LogoutNotifier
    from .keys import KeyRing
    from .logout import Logouts
    from .sso import SSOStore
    from .tokens import TokenService
    from .users import UserStore

    redis = open_redis(settings.redis_url, settings.redis_cluster)
    try:
        store = UserStore(redis)
        user = await store.find(username)
        if user is None:
            raise LookupError(username)
        keys = KeyRing(
            settings.keys_dir,
            settings.signing_alg,
            settings.key_retention,
            activation_delay=settings.key_activation_delay,
            create=False,
        )
        tokens = TokenService(settings, keys, redis)
        notifier = LogoutNotifier(settings, tokens)
        tokens.on_family_ended = notifier.family_ended
        try:
            return await Logouts(tokens, SSOStore(settings, redis, tokens.durable)).revoke_user(user.sub)
        finally:
            await notifier.drain(limit=10.0)  # every client hears of it before the command returns
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="auth-server", description="The jwt-bff OAuth 2.0 / OIDC auth server.")
    add_version_flag(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000)")
    parser.add_argument("--config", metavar="FILE", help="a TOML file of settings, under the environment (AUTH_CONFIG)")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="serve HTTP (the default)")
    # Also accepted after "serve"; SUPPRESS keeps the sub-parser from overwriting values given before it.
    serve.add_argument("--host", default=argparse.SUPPRESS, help="address to listen on")
    serve.add_argument("--port", type=int, default=argparse.SUPPRESS, help="port to listen on")
    HttpLimits.add_arguments(parser)
    HttpLimits.add_arguments(serve, suppress=True)
    keys = commands.add_parser("keys", help="manage signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser("rotate", help="add a new signing key; prune keys whose tokens have all expired")
    users = commands.add_parser("users", help="manage users")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add = users_commands.add_parser("add", help="create a user (password from --password, the prompt or stdin)")
    add.add_argument("username", help="the new user's login name")
    add.add_argument("--password", help="the password (prefer the prompt or stdin: arguments show in ps)")
    totp = users_commands.add_parser(
        "totp", help="turn TOTP on for a user (replacing any secret): prints the otpauth:// URI and recovery codes"
    )
    totp.add_argument("username")
    reset = users_commands.add_parser(
        "mfa-reset",
        help="remove every second factor of a user who lost them (TOTP, passkeys, recovery codes): the password "
        "alone signs in again, and a new factor can be enrolled at /account",
    )
    reset.add_argument("username")
    reseal = users_commands.add_parser(
        "totp-reseal",
        help="seal every user's TOTP secret with the first of AUTH_FACTOR_KEYS (after setting them, or putting a new "
        "key first): prints how many were sealed, already were, and open under no listed key",
    )
    reseal.add_argument(
        "--unseal",
        action="store_true",
        help="write every secret back as the authenticator app holds it (before a rollback to a release without "
        "AUTH_FACTOR_KEYS, or before emptying them)",
    )
    sessions = commands.add_parser("sessions", help="manage login sessions")
    sessions_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    revoke = sessions_commands.add_parser(
        "revoke", help="end every SSO session and login of a user, with back-channel logouts to the clients"
    )
    revoke.add_argument("username", help="whose sessions to end")
    commands.add_parser(
        "config", help="print the effective configuration (secrets redacted) and where each value came from"
    )
    args = parser.parse_args(argv)
    if args.config:
        os.environ["AUTH_CONFIG"] = args.config
    try:
        if args.command == "config":
            print(SETTINGS.render(os.environ), end="")
            return 0
        settings = Settings.from_env()
        limits = HttpLimits.from_arguments(args, SETTINGS.layer(os.environ))
    except SettingsError as exc:
        print(f"auth-server: {exc}", file=sys.stderr)
        return 2
    if args.command == "keys":
        return _rotate(settings)
    if args.command == "users" and args.users_command == "totp":
        try:
            uri, codes = asyncio.run(_totp(settings, args.username))
        except LookupError:
            print(f"auth-server: no user {args.username!r}", file=sys.stderr)
            return 1
        print(f"TOTP is on for {args.username}. Scan or type into the authenticator app:\n{uri}")
        print("Recovery codes (each works once; shown only now):\n" + "\n".join(codes))
        return 0
    if args.command == "users" and args.users_command == "totp-reseal":
        if not settings.factor_keys:
            print("auth-server: AUTH_FACTOR_KEYS is empty: there is no key to seal with", file=sys.stderr)
            return 2
        counts = asyncio.run(_totp_reseal(settings, args.unseal))
        done, already = (
            ("unsealed", "already in the clear") if args.unseal else ("sealed", "already sealed with the first key")
        )
        print(f"{done} {counts['sealed']}, {already} {counts['current']}, under no listed key {counts['unopenable']}")
        if counts["unopenable"]:
            print("those users' authenticators cannot be checked: list the key that sealed them in AUTH_FACTOR_KEYS, "
                  "or have them enrol again (auth-server users mfa-reset USERNAME)", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    if args.command == "users" and args.users_command == "mfa-reset":
        try:
            removed = asyncio.run(_mfa_reset(settings, args.username))
        except LookupError:
            print(f"auth-server: no user {args.username!r}", file=sys.stderr)
            return 1
        what = ["TOTP"] * removed["totp"] + [f"{len(removed['passkeys'])} passkey(s)"] * bool(removed["passkeys"])
        what += [f"{removed['recovery_codes']} recovery code(s)"] * bool(removed["recovery_codes"])
        print(f"removed from {args.username}: {', '.join(what) or 'nothing (no second factor was enrolled)'}")
        print(f"their logins stay; `auth-server sessions revoke {args.username}` ends them")
        return 0
    if args.command == "users":
        try:
            sub = asyncio.run(_add_user(settings, args.username, _read_password(args)))
        except SignUpError as exc:
            print(f"auth-server: {exc.field}: {exc.description}", file=sys.stderr)
            return 1
        print(f"created user {args.username} (sub {sub})")
        return 0
    if args.command == "sessions":
        try:
            ended, logins = asyncio.run(_revoke_user(settings, args.username))
        except LookupError:
            print(f"auth-server: no user {args.username!r}", file=sys.stderr)
            return 1
        print(f"ended {ended} SSO session(s) and {logins} login(s) of {args.username}")
        return 0
    try:
        settings.check_client_secrets()  # only serving needs them strong: the maintenance commands never use them
    except SettingsError as exc:
        print(f"auth-server: {exc}", file=sys.stderr)
        return 2
    return _serve(settings, args.host, args.port, limits)


if __name__ == "__main__":
    sys.exit(main())
