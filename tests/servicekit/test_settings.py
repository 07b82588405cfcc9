"""Settings declared once (servicekit.settings): environment over TOML file over default, <NAME>_FILE secrets,
errors that name the setting, and declarations that agree with each service's dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from auth_server.settings import SETTINGS as AUTH
from auth_server.settings import Settings as AuthSettings
from bff.settings import SETTINGS as BFF
from bff.settings import Settings as BffSettings
from resource_server.settings import SETTINGS as RS
from resource_server.settings import Settings as RsSettings
from servicekit.proxies import TrustedProxies
from servicekit.settings import Declarations, SettingsError

SECRET = "a-long-client-secret-0123456789"


@pytest.mark.parametrize(
    ("declarations", "cls", "env"),
    [(BFF, BffSettings, {"BFF_CLIENT_SECRET": SECRET}), (AUTH, AuthSettings, {}), (RS, RsSettings, {})],
)
def test_declared_defaults_are_the_dataclass_defaults(declarations: Declarations, cls: type, env: dict) -> None:
    """The dataclass keeps defaults for tests that build settings directly; they must be the declared ones."""
    read = cls.from_env(env)
    keys = {declarations.key(s) for s in declarations.settings}
    checked = 0
    for f in dataclasses.fields(cls):
        if f.name not in keys or f.default is dataclasses.MISSING or f.name in ("routes", "post_logout_url"):
            continue
        assert getattr(read, f.name) == f.default, f.name
        checked += 1
    assert checked >= 8


def test_every_declaration_has_a_description_and_a_known_kind() -> None:
    for declarations in (BFF, AUTH, RS):
        for s in declarations.settings:
            assert s.help.strip() and s.help.rstrip().endswith((".", ")")), s.name
            assert s.name.isupper() and s.name.replace("_", "").isalnum(), s.name


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def test_the_file_gives_settings_and_the_environment_wins(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "bff.toml",
        f'''
issuer = "https://id.example"
client_id = "from-file"
client_secret = "{SECRET}"
idle_ttl = 600
cookie_secure = false
scopes = ["openid", "orders"]
trusted_proxies = ["10.0.0.0/8"]

[routes.orders]
url = "http://orders:8080"
token = "user"
methods = ["GET", "POST"]

[routes.status]
url = "http://status:8080"
token = "none"
''',
    )
    s = BffSettings.from_env({"BFF_CONFIG": config, "BFF_CLIENT_ID": "from-env", "BFF_IDLE_TTL": ""})
    assert (s.issuer, s.client_id, s.client_secret, s.idle_ttl, s.cookie_secure) == (
        "https://id.example",
        "from-env",
        SECRET,
        600,
        False,
    )
    assert s.scopes == "openid orders" and len(s.trusted_proxies) == 1
    assert {"GET", "POST"} <= (s.routes["orders"].methods or set()) and s.routes["status"].token == "none"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "issuer = 'http://x'\nclient_secrett = 'x'\n",
            "unknown setting 'client_secrett'; did you mean 'client_secret'?",
        ),
        ("idle_ttl = 'soon'\n", "idle_ttl must be an integer, got 'soon'"),
        ("idle_ttl = 0\n", "idle_ttl must be >= 1"),
        ("cookie_secure = 'yes'\n", "cookie_secure must be true or false"),
        ("issuer = \n", "not valid TOML"),
        ("[routes.orders]\nurl = 'ftp://x'\n", "routes[orders].url must be an http(s) URL"),
        ("[routes.orders]\nurl = 'http://x'\ntypo = 1\n", "unknown field 'typo'"),
        ("client_secret = 12345\n", "client_secret must be a string, got a int"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, content: str, message: str) -> None:
    config = write(tmp_path, "bad.toml", content)
    env = (
        {"BFF_CONFIG": config, "BFF_CLIENT_SECRET": SECRET}
        if "client_secret" not in content
        else {"BFF_CONFIG": config}
    )
    with pytest.raises(SettingsError) as caught:
        BffSettings.from_env(env)
    assert message in str(caught.value) and config in str(caught.value)
    assert "12345" not in str(caught.value)


def test_a_missing_config_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BFF_CONFIG: cannot read"):
        BffSettings.from_env({"BFF_CONFIG": str(tmp_path / "absent.toml"), "BFF_CLIENT_SECRET": SECRET})


def test_secrets_from_files(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "client_secret", SECRET + "\n")
    s = BffSettings.from_env({"BFF_CLIENT_SECRET_FILE": secret_file})
    assert s.client_secret == SECRET
    config = write(tmp_path, "bff.toml", f'client_secret_file = "{secret_file}"\n')
    assert BffSettings.from_env({"BFF_CONFIG": config}).client_secret == SECRET
    # the environment's secret (either way) wins over the file's
    assert BffSettings.from_env({"BFF_CONFIG": config, "BFF_CLIENT_SECRET": "x" * 20}).client_secret == "x" * 20
    form = write(tmp_path, "form", "f" * 20 + "\r\n")
    assert AuthSettings.from_env({"AUTH_FORM_SECRET_FILE": form}).form_secret == b"f" * 20
    assert RsSettings.from_env({"RS_DPOP_NONCE_SECRET_FILE": form}).dpop_nonce_secret == b"f" * 20


def test_secret_file_errors_name_the_setting(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "client_secret", SECRET)
    with pytest.raises(SettingsError, match="BFF_CLIENT_SECRET and BFF_CLIENT_SECRET_FILE are both set"):
        BffSettings.from_env({"BFF_CLIENT_SECRET": SECRET, "BFF_CLIENT_SECRET_FILE": secret_file})
    absent = str(tmp_path / "nope")
    with pytest.raises(SettingsError) as caught:
        BffSettings.from_env({"BFF_CLIENT_SECRET_FILE": absent})
    assert "BFF_CLIENT_SECRET" in str(caught.value) and absent in str(caught.value)
    both = write(tmp_path, "both.toml", f'client_secret = "{SECRET}"\nclient_secret_file = "{secret_file}"\n')
    with pytest.raises(SettingsError, match="both set"):
        BffSettings.from_env({"BFF_CONFIG": both})
    empty = write(tmp_path, "empty", "\n")
    with pytest.raises(SettingsError, match="BFF_CLIENT_SECRET.*is empty"):
        BffSettings.from_env({"BFF_CLIENT_SECRET_FILE": empty})


def test_config_redacts_secrets_and_names_sources(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "client_secret", SECRET + "\n")
    config = write(tmp_path, "bff.toml", 'client_id = "app"\n')
    out = BFF.render(
        {
            "BFF_CONFIG": config,
            "BFF_CLIENT_SECRET_FILE": secret_file,
            "BFF_ISSUER": "https://id.example",
            "REDIS_URL": "redis://:hunter2-password@redis:6379/0",
        }
    )
    assert SECRET not in out and "hunter2" not in out
    lines = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert lines["BFF_CLIENT_SECRET"].endswith("<redacted>  # BFF_CLIENT_SECRET_FILE")
    assert lines["BFF_CLIENT_ID"].endswith("app  # file")
    assert lines["BFF_ISSUER"].endswith("https://id.example  # env")
    assert lines["BFF_IDLE_TTL"].endswith("1800  # default")
    clients = '[{"client_id": "a", "client_secret": "' + SECRET + '", "redirect_uris": ["http://a/cb"]}]'
    out = AUTH.render({"AUTH_CLIENTS": clients})
    assert SECRET not in out and '"client_id": "a"' in out


def test_the_configuration_guide_example_loads(tmp_path: Path) -> None:
    """docs_src/configuration/bff.toml, as docs/guides/configuration.md shows it: its secret file is replaced by the
    environment's, which wins."""
    example = Path(__file__).resolve().parents[2] / "docs_src" / "configuration" / "bff.toml"
    s = BffSettings.from_env({"BFF_CONFIG": str(example), "BFF_CLIENT_SECRET": SECRET})
    assert (s.issuer, s.client_id, s.public_url, s.client_secret) == (
        "https://id.example.com",
        "shop",
        "https://shop.example.com",
        SECRET,
    )
    assert s.scopes == "openid profile email offline_access" and "groups" in s.user_claims
    assert s.redis_url == "redis://redis:6379/0" and s.compact_store
    assert set(s.routes) == {"orders", "admin", "status"}
    assert s.routes["orders"].resource == "https://orders.example.com" and s.routes["status"].token == "none"
    assert "groups" in s.routes.required_claims()
    # without the environment's secret, the file's client_secret_file is read
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    copy = tmp_path / "bff.toml"
    copy.write_text(example.read_text().replace("/run/secrets/bff_client_secret", str(secret)))
    assert BffSettings.from_env({"BFF_CONFIG": str(copy)}).client_secret == SECRET


MARKER = "zz-secret-marker-0123456789-0123456789"  # long enough for every secret (AUTH_FACTOR_KEYS: 32)
NEEDS = {"RS_REVOCATIONS_CLIENT_SECRET": {"RS_REVOCATIONS_CLIENT_ID": "notes"}}  # settings given together


@pytest.mark.parametrize(
    ("declarations", "cls", "base"),
    [
        (BFF, BffSettings, {"BFF_CLIENT_SECRET": SECRET}),
        (AUTH, AuthSettings, {}),
        (RS, RsSettings, {}),
    ],
    ids=["bff", "auth-server", "resource-server"],
)
def test_no_secret_setting_shows_in_a_repr_or_in_config(
    declarations: Declarations, cls: type, base: dict[str, str], tmp_path: Path
) -> None:
    """Every setting declared secret (including ones added later): given directly or by _FILE, its value is in
    neither the settings' repr nor the config output."""
    secrets = [s for s in declarations.settings if s.secret]
    assert secrets
    for setting in secrets:
        value = MARKER
        if setting.kind == "tables":
            value = f'[{{"client_id": "c", "client_secret": "{MARKER}", "redirect_uris": ["http://a/cb"]}}]'
        path = tmp_path / setting.name
        path.write_text(value + "\n")
        with_it = {k: v for k, v in {**base, **NEEDS.get(setting.name, {})}.items() if k != setting.name}
        for env in ({**with_it, setting.name: value}, {**with_it, setting.file_name: str(path)}):
            settings = cls.from_env(env)
            assert MARKER not in repr(settings) and MARKER not in str(settings), setting.name
            assert MARKER not in declarations.render(env), setting.name


def test_the_auth_servers_clients_as_tables_in_a_file(tmp_path: Path) -> None:
    config = tmp_path / "auth.toml"
    config.write_text(
        f"""
issuer = "https://id.example"
access_ttl = 120

[[clients]]
client_id = "bff"
client_secret = "{SECRET}"
redirect_uris = ["https://app.example/bff/callback"]
scope = "openid notes:read"
audience = ["notes"]

[[clients]]
client_id = "reports"
client_secret = "{SECRET}"
grant_types = ["client_credentials"]
"""
    )
    s = AuthSettings.from_env({"AUTH_CONFIG": str(config)})
    assert (s.issuer, s.access_ttl) == ("https://id.example", 120)
    assert [c.client_id for c in s.clients] == ["bff", "reports"] and s.clients[0].audience == ("notes",)
    assert SECRET not in AUTH.render({"AUTH_CONFIG": str(config)})
    config.write_text("[clients]\nclient_id = 'bff'\n")  # a table where an array of tables belongs
    with pytest.raises(SettingsError, match="clients must be an array of tables"):
        AuthSettings.from_env({"AUTH_CONFIG": str(config)})


def test_a_misspelt_variable_is_named_with_the_likely_one() -> None:
    env = {"BFF_CLIENT_SECRET": SECRET, "BFF_IDEL_TTL": "60", "BFF_CLIENT_SECRET_FILE_X": "", "AUTH_ISSUER": "x"}
    assert BFF.unknown(env) == [
        "BFF_CLIENT_SECRET_FILE_X is not a setting of the bff, it is ignored; did you mean BFF_CLIENT_SECRET_FILE?",
        "BFF_IDEL_TTL is not a setting of the bff, it is ignored; did you mean BFF_IDLE_TTL?",
    ]
    assert "# WARNING: BFF_IDEL_TTL is not a setting" in BFF.render(env)
    assert BFF.unknown({"BFF_CONFIG": "x", "BFF_CLIENT_SECRET_FILE": "y", "BFF_IDLE_TTL": "1"}) == []


TROUBLE = [
    '"x"',
    '""',
    "-1",
    "0",
    "99999999999999999999999",
    "1.5",
    "inf",
    "nan",
    "true",
    "[]",
    "[1, 2]",
    '["a", ""]',
    "{}",
    "{ a = 1 }",
    '{ url = "http://x", token = "nope" }',
    "{ url = 1 }",
    "1979-05-27T07:32:00Z",
    '"\\u0000"',
    '"http://x/\\n"',
]


@pytest.mark.parametrize(("declarations", "cls"), [(BFF, BffSettings), (AUTH, AuthSettings), (RS, RsSettings)])
def test_any_value_for_any_key_is_read_or_refused_naming_the_key(
    declarations: Declarations, cls: type, tmp_path: Path
) -> None:
    """Every key of the file with every troublesome TOML value: the settings load, or a SettingsError names the key
    and the file (or the setting); never another exception (which would be a traceback at start-up)."""
    config = tmp_path / "c.toml"
    base = {"BFF_CLIENT_SECRET": SECRET} if declarations is BFF else {}
    refused = 0
    for setting in declarations.settings:
        key = declarations.key(setting)
        for value in TROUBLE:
            config.write_text(f"{key} = {value}\n")
            env = {**base, declarations.config_var or "": str(config)}
            if key == "client_secret":
                env.pop("BFF_CLIENT_SECRET")
            try:
                cls.from_env(env)
            except SettingsError as exc:
                refused += 1
                message = str(exc)
                # the file's key and the file, or (a check across settings, after reading) the variable's name
                assert (key in message and str(config) in message) or setting.name in message, (key, value, message)
    assert refused > len(declarations.settings) * 5


ENV_TROUBLE = [
    "x",
    " ",
    "-1",
    "0",
    "1e999",
    "nan",
    "99999999999999999999",
    "true",
    "[]",
    "{}",
    '{"a": 1}',
    "\x7f",
    "a,b",
]


@pytest.mark.parametrize(("declarations", "cls"), [(BFF, BffSettings), (AUTH, AuthSettings), (RS, RsSettings)])
def test_any_value_of_any_variable_is_read_or_refused_naming_it(declarations: Declarations, cls: type) -> None:
    base = {"BFF_CLIENT_SECRET": SECRET} if declarations is BFF else {}
    for setting in declarations.settings:
        for value in ENV_TROUBLE:
            try:
                cls.from_env({**base, setting.name: value})
            except SettingsError as exc:
                assert setting.name in str(exc) or declarations.key(setting) in str(exc), (setting.name, value, exc)


def test_shared_settings_in_the_file_reach_the_http_limits_and_redis(tmp_path: Path) -> None:
    """`bff serve` reads its HTTP limits through the same layers (servicekit.http), so the file's keys apply."""
    import argparse

    from servicekit.http import HttpLimits

    config = write(
        tmp_path, "bff.toml", "http_max_concurrency = 7\nhttp_header_timeout = 2.5\nredis_wait_timeout = 300\n"
    )
    env = {"BFF_CONFIG": config, "BFF_CLIENT_SECRET": SECRET, "HTTP_HEADER_TIMEOUT": "4"}
    args = argparse.Namespace(max_header_bytes=None, header_timeout=None, max_concurrency=None)
    limits = HttpLimits.from_arguments(args, BFF.layer(env))
    assert (limits.max_concurrency, limits.header_timeout) == (7, 4.0)  # the environment wins
    assert BffSettings.from_env(env).redis_wait.timeout_ms == 300


@pytest.mark.parametrize("path", ["/dev/zero", "/", "/proc/self/mem"])
def test_a_device_or_directory_named_by_mistake_is_refused_quickly(path: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=f"BFF_CLIENT_SECRET: cannot read BFF_CLIENT_SECRET_FILE='{path}'"):
        BffSettings.from_env({"BFF_CLIENT_SECRET_FILE": path})
    with pytest.raises(SettingsError, match=f"BFF_CONFIG: cannot read '{path}'"):
        BffSettings.from_env({"BFF_CONFIG": path, "BFF_CLIENT_SECRET": SECRET})
    binary = write(tmp_path, "binary", "")
    Path(binary).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match="cannot read"):
        BffSettings.from_env({"BFF_CLIENT_SECRET_FILE": binary})


def test_bff_stack_takes_the_client_secret_from_its_file(tmp_path: Path) -> None:
    """`bff stack` registers the BFF's client at its auth server with the secret the BFF will read: from
    BFF_CLIENT_SECRET_FILE too (it set BFF_CLIENT_SECRET as well, and the BFF refused both)."""
    import json

    from bff.stack import StackPorts, stack_environment

    secret = write(tmp_path, "secret", SECRET + "\n")
    env = stack_environment(StackPorts(), {"BFF_CLIENT_SECRET_FILE": secret})
    assert "BFF_CLIENT_SECRET" not in env
    assert json.loads(env["AUTH_CLIENTS"])[0]["client_secret"] == SECRET == BffSettings.from_env(env).client_secret


def test_bff_stack_registers_the_public_url_it_is_given() -> None:
    """Behind an edge, `BFF_PUBLIC_URL=http://localhost:8080 bff stack`: the client's redirect and logout URIs are the
    BFF's public ones (the stack registered its port's, and every login was refused as misconfigured)."""
    import json

    from bff.stack import StackPorts, stack_environment

    env = stack_environment(StackPorts(bff=18000), {"BFF_PUBLIC_URL": "http://localhost:18080/"})
    (client,) = json.loads(env["AUTH_CLIENTS"])
    assert (
        client["redirect_uris"] == ["http://localhost:18080/bff/callback"] == [BffSettings.from_env(env).redirect_uri]
    )
    assert client["post_logout_redirect_uris"] == ["http://localhost:18080/"]
    plain = json.loads(stack_environment(StackPorts(bff=18000), {})["AUTH_CLIENTS"])[0]
    assert plain["redirect_uris"] == ["http://localhost:18000/bff/callback"]


def test_a_default_made_from_other_settings_is_shown_as_its_value() -> None:
    env = {"BFF_CLIENT_SECRET": SECRET, "BFF_PUBLIC_URL": "https://shop.example"}
    assert BffSettings.from_env(env).post_logout_url == "https://shop.example/"
    line = next(line for line in BFF.render(env).splitlines() if line.startswith("BFF_POST_LOGOUT_URL"))
    assert line.endswith("= https://shop.example/  (BFF_PUBLIC_URL + /)  # default")
    assert AuthSettings.from_env({"AUTH_JWKS_MAX_AGE": "60"}).key_activation_delay == 60
    assert (
        AuthSettings.from_env({"AUTH_JWKS_MAX_AGE": "60", "AUTH_KEY_ACTIVATION_DELAY": "0"}).key_activation_delay == 0
    )


def test_the_layered_environment_shows_no_value(tmp_path: Path) -> None:
    layered = BFF.layer({"BFF_CLIENT_SECRET": SECRET, "BFF_CONFIG": write(tmp_path, "c.toml", 'client_id = "a"\n')})
    assert layered["BFF_CLIENT_ID"] == "a" and SECRET not in repr(layered) and SECRET not in str(layered)


def test_a_retired_setting_is_ignored_with_a_warning_never_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade must not stop a service over a setting of an earlier release (BFF_USER_INDEX_SET): in the
    environment or in the file, it is named with what to do instead, and ignored."""
    (message,) = BFF.unknown({"BFF_USER_INDEX_SET": "false"})
    assert "earlier release" in message and "BFF_COMPACT_STORE=true" in message
    config = tmp_path / "bff.toml"
    config.write_text('client_secret = "s3cret-for-a-test-of-retired-settings"\nuser_index_set = false\n')
    settings = BffSettings.from_env({"BFF_CONFIG": str(config)})
    assert settings.compact_store is False
    assert "user_index_set" in caplog.text or "BFF_USER_INDEX_SET" in caplog.text
    with pytest.raises(SettingsError, match="unknown setting 'user_index_sets'"):
        config.write_text('client_secret = "s3cret-for-a-test-of-retired-settings"\nuser_index_sets = false\n')
        BffSettings.from_env({"BFF_CONFIG": str(config)})


def test_unix_trusts_the_peers_of_the_bffs_unix_socket_and_no_one_else() -> None:
    """BFF_TRUSTED_PROXIES=unix (bff serve --uds): a peer without an address (the socket's) is trusted, and its
    X-Forwarded-For believed; without it, such a peer is not. The auth server listens on no socket: refused there."""
    forwarded = [(b"x-forwarded-for", b"198.51.100.7")]
    both = TrustedProxies(
        BffSettings.from_env({"BFF_CLIENT_SECRET": SECRET, "BFF_TRUSTED_PROXIES": "unix, 10.0.0.0/8"}).trusted_proxies
    )
    assert None in both and "10.1.2.3" in both and "127.0.0.1" not in both and both.any
    assert both.client_address(None, forwarded) == "198.51.100.7"
    tcp = TrustedProxies(
        BffSettings.from_env({"BFF_CLIENT_SECRET": SECRET, "BFF_TRUSTED_PROXIES": "10.0.0.0/8"}).trusted_proxies
    )
    assert None not in tcp and tcp.client_address(None, forwarded) == ""
    assert not TrustedProxies(()).any
    with pytest.raises(SettingsError, match="AUTH_TRUSTED_PROXIES must be comma-separated CIDRs, got 'unix'"):
        AuthSettings.from_env({"AUTH_TRUSTED_PROXIES": "unix"})
