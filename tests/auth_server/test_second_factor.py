"""DESIGN §14 at the auth server: TOTP and recovery codes enrolled on /account or by the CLI; acr_values and max_age
ask for what is missing, and only that; acr, amr and auth_time in the tokens; a code works once; second-factor
guesses are throttled; the attacks: replaying the password step's form, downgrading acr_values of a pushed request,
editing the form's acr_values."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
import redis.asyncio as aioredis

from auth_server.__main__ import main
from auth_server.mfa import FactorKeyMissing, SecondFactors

from .helpers import (
    BFF_SECRET,
    PASSWORD,
    SSO_COOKIE,
    USERNAME,
    authorize_params,
    claims_of,
    exchange,
    form_of,
    location_params,
    pkce,
    refresh,
)

pytestmark = pytest.mark.anyio


class Codes:
    """TOTP codes of one secret, each of a later time step than the one before (a code works once; ±1 step is
    accepted, so three are usable at any moment: now - 30 s, now, now + 30 s)."""

    def __init__(self, secret: str) -> None:
        if time.time() % 30 > 25:  # not near a step's end: the three steps stay in the window for the whole test
            time.sleep(30 - time.time() % 30 + 0.1)
        self.totp = pyotp.TOTP(secret)
        self.t0 = time.time()
        self.next = -1

    def take(self) -> str:
        code = self.totp.at(self.t0 + 30 * self.next)
        self.next += 1
        return code


async def account_login(client: httpx.AsyncClient) -> httpx.Response:
    page = await client.get("/account")
    assert page.status_code == 200 and 'name="password"' in page.text
    fields = {**form_of(page.text).fields, "username": USERNAME, "password": PASSWORD}
    signed_in = await client.post("/account", data=fields)
    assert signed_in.status_code == 303, signed_in.text
    return await client.get("/account")


async def account_post(client: httpx.AsyncClient, action: str, **fields: str) -> httpx.Response:
    page = await client.get("/account")
    token = form_of(page.text).fields["form_token"]
    return await client.post("/account", data={"form_token": token, "action": action, **fields})


async def enrol_totp(client: httpx.AsyncClient) -> tuple[Codes, list[str]]:
    """Sign in on /account and turn TOTP on: (its codes, the recovery codes shown once)."""
    await account_login(client)
    started = await account_post(client, "totp-start")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', started.text)
    uri = re.search(r'id="totp-uri">(otpauth://[^<]+)<', started.text)
    assert secret and uri, started.text
    assert parse_qs(urlsplit(uri.group(1).replace("&amp;", "&")).query)["secret"] == [secret.group(1)]
    codes = Codes(secret.group(1))
    confirmed = await account_post(client, "totp-confirm", otp=codes.take())
    assert confirmed.status_code == 200 and "Authenticator app turned on" in confirmed.text, confirmed.text
    recovery = re.findall(r"<code>([a-z2-7]{5}-[a-z2-7]{5})</code>", confirmed.text)
    assert len(recovery) == 10
    return codes, recovery


async def password_step(client: httpx.AsyncClient, params: dict[str, str]) -> httpx.Response:
    client.cookies.delete(SSO_COOKIE)
    page = await client.get("/oauth/authorize", params=params)
    assert page.status_code == 200 and 'name="password"' in page.text
    form = form_of(page.text)
    return await client.post(form.action or "", data={**form.fields, "username": USERNAME, "password": PASSWORD})


def second_factor_form(page: httpx.Response, form_id: str = "otp-form") -> dict[str, str]:
    assert page.status_code in (200, 400), page.text
    html = page.text[page.text.index(f'id="{form_id}"') :]
    return form_of("<form " + html).fields


async def test_discovery_advertises_the_levels(client: httpx.AsyncClient) -> None:
    metadata = (await client.get("/.well-known/openid-configuration")).json()
    assert metadata["acr_values_supported"] == ["pwd", "mfa"]
    assert {"acr", "amr", "auth_time"} <= set(metadata["claims_supported"])


async def test_a_password_login_is_pwd_in_both_tokens(client: httpx.AsyncClient, user: Any) -> None:
    verifier, challenge = pkce()
    response = await password_step(client, authorize_params(challenge))
    tokens = (await exchange(client, location_params(response)["code"], verifier)).json()
    for token in (tokens["id_token"], tokens["access_token"]):
        claims = claims_of(token)
        assert claims["acr"] == "pwd" and claims["amr"] == ["pwd"] and abs(claims["auth_time"] - time.time()) < 60


async def test_totp_step_up_gives_mfa_tokens_and_a_code_works_once(client: httpx.AsyncClient, user: Any) -> None:
    codes, _ = await enrol_totp(client)
    verifier, challenge = pkce()
    params = authorize_params(challenge, acr_values="mfa", max_age="300")
    asked = await password_step(client, params)
    assert asked.status_code == 200 and 'name="otp"' in asked.text and "location" not in asked.headers
    fields = second_factor_form(asked)
    wrong = await client.post("/oauth/authorize", data={**fields, "otp": "000000"})
    assert wrong.status_code == 400 and 'name="otp"' in wrong.text
    code = codes.take()
    done = await client.post("/oauth/authorize", data={**fields, "otp": code})
    tokens = (await exchange(client, location_params(done)["code"], verifier)).json()
    before = time.time()
    for token in (tokens["id_token"], tokens["access_token"]):
        claims = claims_of(token)
        assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "otp", "mfa"], claims
        assert before - 60 < claims["auth_time"] <= before
    refreshed = (await refresh(client, tokens["refresh_token"])).json()
    assert claims_of(refreshed["access_token"])["acr"] == "mfa"  # the login's level, kept across refreshes

    # Within max_age the session is at mfa: no form at all. max_age=0 asks again — the second factor only, since the
    # password is there — and the code used above is refused (a replay), a later one works.
    assert "code" in location_params(await client.get("/oauth/authorize", params=params))
    again = await client.get("/oauth/authorize", params={**params, "max_age": "0"})
    assert again.status_code == 200 and 'name="otp"' in again.text and 'name="password"' not in again.text
    fields = second_factor_form(again)
    replayed = await client.post("/oauth/authorize", data={**fields, "otp": code})
    assert replayed.status_code == 400 and "works once" in replayed.text
    fresh = await client.post("/oauth/authorize", data={**fields, "otp": codes.take()})
    assert "code" in location_params(fresh)


async def test_replaying_the_password_form_never_skips_the_second_factor(client: httpx.AsyncClient, user: Any) -> None:
    await enrol_totp(client)
    params = authorize_params(pkce()[1], acr_values="mfa")
    client.cookies.delete(SSO_COOKIE)
    page = await client.get("/oauth/authorize", params=params)
    fields = {**form_of(page.text).fields, "username": USERNAME, "password": PASSWORD}
    for _ in range(2):  # the password step's form, posted again (with the SSO cookie it set, and without)
        replay = await client.post("/oauth/authorize", data=fields)
        assert replay.status_code == 200 and 'name="otp"' in replay.text and "location" not in replay.headers
    client.cookies.delete(SSO_COOKIE)
    assert 'name="otp"' in (await client.post("/oauth/authorize", data=fields)).text
    # the form edited to ask for less is refused: its acr_values are covered by the form token
    for edited in ({**fields, "acr_values": "pwd"}, {k: v for k, v in fields.items() if k != "acr_values"}):
        refused = await client.post("/oauth/authorize", data=edited)
        assert refused.status_code == 400 and "expired" in refused.text and "location" not in refused.headers
    # the second factor's step posted with an empty factor, or without a session, gives no code either
    fields_2fa = second_factor_form(await client.post("/oauth/authorize", data=fields))
    assert "location" not in (await client.post("/oauth/authorize", data={**fields_2fa, "otp": ""})).headers
    client.cookies.delete(SSO_COOKIE)
    no_session = await client.post("/oauth/authorize", data={**fields_2fa, "otp": "123456"})
    assert no_session.status_code == 400 and 'name="password"' in no_session.text


async def test_a_pushed_mfa_request_cannot_be_downgraded_by_the_browser(client: httpx.AsyncClient, user: Any) -> None:
    await enrol_totp(client)
    params = authorize_params(pkce()[1], acr_values="mfa")
    pushed = await client.post("/oauth/par", data=params, auth=("bff", BFF_SECRET))
    assert pushed.status_code == 201, pushed.text
    client.cookies.delete(SSO_COOKIE)
    page = await client.get(
        "/oauth/authorize",
        params={"client_id": "bff", "request_uri": pushed.json()["request_uri"], "acr_values": "pwd", "max_age": "9"},
    )
    form = form_of(page.text)
    assert form.fields["acr_values"] == "mfa" and "max_age" not in form.fields  # the sealed request, not the query
    posted = await client.post(form.action or "", data={**form.fields, "username": USERNAME, "password": PASSWORD})
    assert posted.status_code == 200 and 'name="otp"' in posted.text and "location" not in posted.headers


async def test_a_recovery_code_works_once(client: httpx.AsyncClient, user: Any) -> None:
    _, recovery = await enrol_totp(client)
    params = authorize_params(pkce()[1], acr_values="mfa")
    fields = second_factor_form(await password_step(client, params), "recovery-form")
    used = await client.post("/oauth/authorize", data={**fields, "recovery_code": recovery[0].upper()})
    assert "code" in location_params(used)
    fields = second_factor_form(await password_step(client, params), "recovery-form")
    again = await client.post("/oauth/authorize", data={**fields, "recovery_code": recovery[0]})
    assert again.status_code == 400


async def test_second_factor_guesses_are_throttled(client: httpx.AsyncClient, user: Any) -> None:
    codes, _ = await enrol_totp(client)
    fields = second_factor_form(await password_step(client, authorize_params(pkce()[1], acr_values="mfa")))
    statuses = [
        (await client.post("/oauth/authorize", data={**fields, "otp": f"{n:06d}"})).status_code for n in range(11)
    ]
    assert statuses == [400] * 10 + [429], statuses
    locked = await client.post("/oauth/authorize", data={**fields, "otp": codes.take()})
    assert locked.status_code == 429 and "retry-after" in locked.headers


async def test_no_second_factor_enrolled_says_where_to_set_one_up(client: httpx.AsyncClient, user: Any) -> None:
    page = await password_step(client, authorize_params(pkce()[1], acr_values="mfa"))
    assert page.status_code == 200 and "You have no second factor yet" in page.text and "/account" in page.text
    assert "location" not in page.headers


async def test_changing_factors_needs_the_second_factor_once_one_exists(client: httpx.AsyncClient, user: Any) -> None:
    codes, _ = await enrol_totp(client)
    client.cookies.delete(SSO_COOKIE)
    await account_login(client)  # a password alone (a thief of it, say)
    refused = await account_post(client, "totp-start")
    assert refused.status_code == 403 and "totp-secret" not in refused.text
    assert (await account_post(client, "recovery-codes")).status_code == 403
    verified = await account_post(client, "verify", otp=codes.take())
    assert verified.status_code == 303
    page = await client.get("/account")
    assert 'id="acr">mfa<' in page.text
    assert 'id="totp-secret"' in (await account_post(client, "totp-start")).text


async def test_account_post_without_a_session_or_token_is_refused(client: httpx.AsyncClient, user: Any) -> None:
    page = await client.get("/account")
    token = form_of(page.text).fields["form_token"]
    assert (await client.post("/account", data={"form_token": token, "action": "totp-start"})).status_code == 401
    assert (await client.post("/account", data={"action": "login", "username": USERNAME})).status_code == 400
    wrong = await client.post(
        "/account", data={"form_token": token, "action": "login", "username": USERNAME, "password": "wrong-pw-1"}
    )
    assert wrong.status_code == 400 and "Invalid username or password" in wrong.text


def cli_env(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The environment `auth-server` commands need to reach the test's auth server's Redis; its settings."""
    settings = client._transport.app.state.endpoints.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("AUTH_ISSUER", settings.issuer)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("AUTH_KEYS_DIR", str(settings.keys_dir))
    return settings


async def test_the_cli_enrols_totp_and_prints_the_uri(
    client: httpx.AsyncClient, user: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(client, monkeypatch)
    assert await asyncio.to_thread(main, ["users", "totp", USERNAME]) == 0
    out = capsys.readouterr().out
    uri = re.search(r"otpauth://totp/[^\s]+", out)
    assert uri and "issuer=jwt-bff" in uri.group(0), out
    secret = parse_qs(urlsplit(uri.group(0)).query)["secret"][0]
    codes = Codes(secret)
    fields = second_factor_form(await password_step(client, authorize_params(pkce()[1], acr_values="mfa")))
    assert "code" in location_params(await client.post("/oauth/authorize", data={**fields, "otp": codes.take()}))
    assert await asyncio.to_thread(main, ["users", "totp", "nobody"]) == 1


async def test_the_cli_removes_every_second_factor_of_a_user_who_lost_them(
    client: httpx.AsyncClient, user: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = cli_env(client, monkeypatch)
    assert await asyncio.to_thread(main, ["users", "totp", USERNAME]) == 0
    capsys.readouterr()
    redis = aioredis.Redis.from_url(settings.redis_url)
    passkey = {"key": "AAAA", "count": 0, "type": "single_device", "at": 0}  # as register_passkey stores one
    await redis.hset(f"auth:passkeys:{{{user['sub']}}}", "Y3JlZA", json.dumps(passkey))
    assert await asyncio.to_thread(main, ["users", "mfa-reset", USERNAME]) == 0
    out = capsys.readouterr().out
    assert f"removed from {USERNAME}: TOTP, 1 passkey(s), 10 recovery code(s)" in out, out
    assert not await redis.exists(*(f"auth:{k}:{{{user['sub']}}}" for k in ("mfa", "passkeys", "recovery")))
    await redis.aclose()
    # an mfa request now finds no factor to ask for, and says where to set one up (as for a user who never had one)
    page = await password_step(client, authorize_params(pkce()[1], acr_values="mfa"))
    assert page.status_code == 200 and "You have no second factor yet" in page.text and "/account" in page.text
    assert await asyncio.to_thread(main, ["users", "mfa-reset", USERNAME]) == 0
    assert "nothing (no second factor was enrolled)" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["users", "mfa-reset", "nobody"]) == 1


async def test_a_user_removes_factors_only_with_a_recent_second_factor(client: httpx.AsyncClient, user: Any) -> None:
    codes, _ = await enrol_totp(client)
    redis = aioredis.Redis.from_url(client._transport.app.state.endpoints.settings.redis_url)  # type: ignore[attr-defined]
    key = f"auth:passkeys:{{{user['sub']}}}"
    await redis.hset(key, "Y3JlZA", json.dumps({"key": "AAAA", "count": 0, "type": "single_device", "at": 0}))
    client.cookies.delete(SSO_COOKIE)
    await account_login(client)  # a password alone (a thief of it) removes nothing
    assert (await account_post(client, "totp-off")).status_code == 403
    assert (await account_post(client, "passkey-remove", credential="Y3JlZA")).status_code == 403
    assert (await account_post(client, "verify", otp=codes.take())).status_code == 303
    page = await client.get("/account")
    assert 'value="passkey-remove"' in page.text and 'id="totp-off"' in page.text
    assert (await account_post(client, "passkey-remove", credential="nope")).status_code == 400
    removed = await account_post(client, "passkey-remove", credential="Y3JlZA")
    assert removed.status_code == 200 and "Passkey removed" in removed.text and not await redis.exists(key)
    assert await redis.scard(f"auth:recovery:{{{user['sub']}}}") == 10  # TOTP is left: the codes stay
    off = await account_post(client, "totp-off")
    assert off.status_code == 200 and "Authenticator app turned off" in off.text
    assert 'id="totp-status">Off.' in off.text and 'id="recovery-status">0 unused.' in off.text  # the last factor
    assert (await account_post(client, "totp-off")).status_code == 400
    # with no factor left, an mfa request says where to set one up again
    page = await password_step(client, authorize_params(pkce()[1], acr_values="mfa"))
    assert "You have no second factor yet" in page.text
    await redis.aclose()


# --- TOTP secrets at rest (AUTH_FACTOR_KEYS) ------------------------------------------------------------------------

K1, K2 = b"k" * 32, b"n" * 32


async def stored_totp(redis: aioredis.Redis, sub: str) -> str:
    return (await redis.hget(f"auth:mfa:{{{sub}}}", "totp")).decode()


async def test_totp_secrets_are_sealed_at_rest_and_still_check_codes(redis: aioredis.Redis) -> None:
    factors = SecondFactors(redis, "http://localhost:9000", (K1,))
    secret = await factors.start_totp("u1")
    pending = (await redis.hget("auth:mfa:{u1}", "totp_pending")).decode()
    assert pending.startswith("sealed:") and secret not in pending
    codes = Codes(secret)
    assert await factors.confirm_totp("u1", codes.take())
    stored = await stored_totp(redis, "u1")
    assert stored.startswith("sealed:") and secret not in stored
    assert await factors.verify_totp("u1", codes.take())
    # bound to its user: copied to another, it opens for no one
    await redis.hset("auth:mfa:{u2}", "totp", stored)
    with pytest.raises(FactorKeyMissing):
        await factors.verify_totp("u2", codes.take())


async def test_a_plain_or_old_key_secret_is_sealed_with_the_first_key_at_its_next_use(redis: aioredis.Redis) -> None:
    secret = pyotp.random_base32()
    await redis.hset("auth:mfa:{u3}", mapping={"totp": secret, "totp_step": -1})  # written before the keys were set
    codes = Codes(secret)
    assert await SecondFactors(redis, "http://localhost:9000", (K1,)).verify_totp("u3", codes.take())
    under_k1 = await stored_totp(redis, "u3")
    assert under_k1.startswith("sealed:")
    rotated = SecondFactors(redis, "http://localhost:9000", (K2, K1))  # a new key first, the old one kept
    assert await rotated.verify_totp("u3", codes.take())
    assert await stored_totp(redis, "u3") != under_k1
    assert await SecondFactors(redis, "http://localhost:9000", (K2,)).verify_totp("u3", codes.take())  # K1 dropped
    # a wrong code never reseals, and a secret removed meanwhile is not brought back (compare-and-set)
    await redis.hset("auth:mfa:{u4}", mapping={"totp": secret, "totp_step": -1})
    assert not await rotated.verify_totp("u4", "000000")
    assert await stored_totp(redis, "u4") == secret


async def test_a_secret_no_key_opens_is_said_plainly_and_is_no_failed_guess(
    client: httpx.AsyncClient, user: Any, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A key dropped from AUTH_FACTOR_KEYS too soon: the login says the authenticator cannot be checked now and
    offers the others, the log names the setting, a metric counts it; the throttle does not count it against them."""
    codes, _ = await enrol_totp(client)
    (key,) = await redis.keys("auth:mfa:*")
    await redis.hset(key, "totp", "sealed:" + "A" * 60)  # sealed under a key this server no longer has
    fields = second_factor_form(await password_step(client, authorize_params(pkce()[1], acr_values="mfa")))
    for _ in range(11):  # beyond the throttle's allowance of failed guesses (10), were these counted
        answer = await client.post("/oauth/authorize", data={**fields, "otp": codes.take()})
        assert answer.status_code == 400 and "cannot be checked right now" in answer.text, answer.text
    assert "AUTH_FACTOR_KEYS" in caplog.text
    assert 'auth_login_failures_total{reason="factor_key"} 11.0' in (await client.get("/metrics")).text


async def test_an_unchecked_code_neither_counts_nor_forgives_failed_guesses(
    client: httpx.AsyncClient, user: Any, redis: aioredis.Redis
) -> None:
    """Found reviewing it: the unchecked attempt had settled as a success, which clears the account's failures, so
    someone with the password could guess recovery codes 9 at a time between unchecked codes. It only ends now."""
    codes, _ = await enrol_totp(client)
    (key,) = await redis.keys("auth:mfa:*")
    await redis.hset(key, "totp", "sealed:" + "A" * 60)
    fields = second_factor_form(await password_step(client, authorize_params(pkce()[1], acr_values="mfa")))

    async def guess() -> int:
        return (await client.post("/oauth/authorize", data={**fields, "recovery_code": "wrong-code"})).status_code

    assert [await guess() for _ in range(9)] == [400] * 9
    unchecked = await client.post("/oauth/authorize", data={**fields, "otp": codes.take()})
    assert unchecked.status_code == 400 and "cannot be checked right now" in unchecked.text
    assert [await guess() for _ in range(2)] == [400, 429]  # the 10th failure, then locked


async def test_totp_reseal_seals_what_is_left_and_names_what_no_key_opens(
    client: httpx.AsyncClient,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(client, monkeypatch)
    plain = pyotp.random_base32()
    await redis.hset("auth:mfa:{p1}", mapping={"totp": plain, "totp_step": -1})  # before the keys were set
    await SecondFactors(redis, "http://localhost:9000", (K1,)).activate_totp("p2", pyotp.random_base32())  # old key
    await SecondFactors(redis, "http://localhost:9000", (K2,)).activate_totp("p3", pyotp.random_base32())  # current
    assert await asyncio.to_thread(main, ["users", "totp-reseal"]) == 2  # no keys: nothing to seal with
    monkeypatch.setenv("AUTH_FACTOR_KEYS", f"{K2.decode()}\n{K1.decode()}\n")  # a file's lines: two keys
    assert await asyncio.to_thread(main, ["users", "totp-reseal"]) == 0
    assert "sealed 2, already sealed with the first key 1, under no listed key 0" in capsys.readouterr().out
    only_k2 = SecondFactors(redis, "http://localhost:9000", (K2,))
    assert await only_k2.verify_totp("p1", Codes(plain).take())  # sealed under K2 now
    monkeypatch.setenv("AUTH_FACTOR_KEYS", "z" * 32)
    assert await asyncio.to_thread(main, ["users", "totp-reseal"]) == 1
    assert "under no listed key 3" in capsys.readouterr().out


async def test_totp_reseal_unseal_writes_every_secret_back_in_the_clear(
    client: httpx.AsyncClient,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before a rollback to a release without AUTH_FACTOR_KEYS (which would take the sealed value for the secret),
    or before emptying the keys: every secret back as the authenticator app holds it, and still checking codes."""
    cli_env(client, monkeypatch)
    secret = pyotp.random_base32()
    await SecondFactors(redis, "http://localhost:9000", (K1,)).activate_totp("q1", secret)
    assert (await stored_totp(redis, "q1")).startswith("sealed:")
    monkeypatch.setenv("AUTH_FACTOR_KEYS", K1.decode())
    assert await asyncio.to_thread(main, ["users", "totp-reseal", "--unseal"]) == 0
    assert "unsealed 1, already in the clear 0" in capsys.readouterr().out
    assert await stored_totp(redis, "q1") == secret
    assert await SecondFactors(redis, "http://localhost:9000").verify_totp("q1", Codes(secret).take())
