"""The settings reference (docs/reference/settings.md) cannot drift (DESIGN §13): it is generated from the
declarations, every environment variable the code reads is in it, and it names none the code does not read; what
it marks required is what the services cannot start without, and its examples are values the services accept."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from servicekit import settings_doc
from servicekit.settings import Declarations, SettingsError

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bff", "auth_server", "resource_server", "servicekit", "jwt_bff_verifier")
# A variable read directly: os.environ["X"], os.environ.get("X"), os.getenv("X"), env["X"], env.get("X") (a settings
# mapping); and any call taking the name as its first argument: Setting("X", ...), a helper building one,
# networks("X", raw), ...
DIRECT = re.compile(r"""(?:environ|\benv|getenv)\s*(?:\.get\(|\[|\()\s*["']([A-Z][A-Z0-9_]*)["']""")
DECLARED = re.compile(r"""\w\(\s*["']([A-Z][A-Z0-9]*_[A-Z0-9_]+)["']\s*[,)]""")
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)
SUBSCRIPT = re.compile(r"""\[\s*["']([a-z][a-z0-9_]*)["']\s*\]""")


def sources() -> dict[Path, str]:
    return {
        path: path.read_text()
        for package in PACKAGES
        if (REPO / package).is_dir()
        for path in sorted((REPO / package).rglob("*.py"))
    }


def read_by_code() -> dict[str, list[str]]:
    """Variable -> the files that read it (the declarations' own reader reads every declared one)."""
    found: dict[str, list[str]] = {}
    for _, _, table in settings_doc.declarations():
        for setting in table.settings:
            found.setdefault(setting.name, []).append(f"{table.service} SETTINGS")
            if setting.secret:  # the reader takes a secret from <NAME>_FILE too
                found.setdefault(setting.file_name, []).append(f"{table.service} SETTINGS")
    for path, text in sources().items():
        for pattern in (DIRECT, DECLARED):
            for name in pattern.findall(text):
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def documented() -> set[str]:
    """The variables of the table rows, and the secrets' ``<NAME>_FILE`` their rows name."""
    page = (REPO / "docs/reference/settings.md").read_text()
    return set(ROW.findall(page)) | set(re.findall(r"also read from `([A-Z][A-Z0-9_]*_FILE)`", page))


def test_the_reference_is_generated_from_the_declarations() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "servicekit.settings_doc", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr  # "... is out of date: run `python -m servicekit.settings_doc`"


def test_every_variable_the_code_reads_is_in_the_reference() -> None:
    read = read_by_code()
    assert {"BFF_CLIENT_SECRET", "AUTH_CLIENTS", "RS_AUDIENCE", "REDIS_URL", "HTTP_BODY_TIMEOUT"} <= set(read)
    missing = {name: where for name, where in read.items() if name not in documented()}
    assert not missing, (
        f"read by the code but not in docs/reference/settings.md: {missing}; declare them (servicekit.settings "
        f"Setting, in the service's settings.py) and run `{settings_doc.COMMAND}`"
    )


def test_the_reference_names_only_variables_the_code_reads() -> None:
    read = set(read_by_code())
    config_vars = {table.config_var for _, _, table in settings_doc.declarations() if table.config_var}
    extra = documented() - read - config_vars
    assert not extra, f"docs/reference/settings.md names {sorted(extra)}, which no code reads"


def test_every_declared_setting_is_used() -> None:
    """A declaration is read by the generic reader; its value must also be taken by the service (``v["key"]``)."""
    code = "\n".join(sources().values())
    taken = set(SUBSCRIPT.findall(code))
    for _, _, table in settings_doc.declarations():
        unused = [s.name for s in table.settings if table.key(s) not in taken and s.name.lower() not in taken]
        assert not unused, f"{table.service} declares settings whose values nothing takes: {unused}"


# A valid value for each setting declared required: the tests below start each service with these alone. A new
# required setting needs one here (the first test says so), and the intro and table of the page name it.
GIVEN = {"BFF_CLIENT_SECRET": "test-only-client-secret-0123456789"}
# What serving checks beyond reading the settings (bff serve, auth-server): a weak client secret stops it.
SERVE_CHECKS = {"bff.settings": "check_client_secret", "auth_server.settings": "check_client_secrets"}


def services() -> list[tuple[str, Declarations, Any]]:
    """(module, declarations, its Settings class) of each service the reference documents."""
    out = []
    for _, module, _ in settings_doc.SERVICES:
        loaded = importlib.import_module(module)
        out.append((module, loaded.SETTINGS, loaded.Settings))
    return out


def required_env(table: Declarations) -> dict[str, str]:
    names = [s.name for s in table.settings if s.required]
    assert set(names) <= set(GIVEN), f"give the required {sorted(set(names) - set(GIVEN))} a test value in GIVEN"
    return {name: GIVEN[name] for name in names}


def test_the_reference_marks_exactly_the_required_settings() -> None:
    page = (REPO / "docs/reference/settings.md").read_text()
    marked = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| `\w+` \| \*\*required\*\* \|", page, re.M))
    required = {s.name for _, table, _ in services() for s in table.settings if s.required}
    assert required and marked == required  # BFF_CLIENT_SECRET, today
    intro = page.split("\n## ", 1)[0]
    assert all(f"`{name}`" in intro for name in required) and "**required**" in intro


def test_a_service_without_a_required_setting_stops_with_a_message_naming_it() -> None:
    """Serving and ``bff check`` read Settings.from_env, the ``config`` commands render the declarations."""
    for _, table, settings_class in services():
        env = required_env(table)
        for name in env:
            without = {k: v for k, v in env.items() if k != name}
            with pytest.raises(SettingsError, match=rf"^{name} is required"):
                settings_class.from_env(without)
            with pytest.raises(SettingsError, match=rf"^{name} is required"):
                table.render(without)


def test_every_setting_not_marked_required_may_be_left_unset() -> None:
    """Each service reads its settings, and passes serving's own checks, with only the required ones given: a
    setting the code cannot do without is marked required in the reference, not left to be found at start-up."""
    for module, table, settings_class in services():
        settings = settings_class.from_env(required_env(table))
        if module in SERVE_CHECKS:
            getattr(settings, SERVE_CHECKS[module])()


def test_every_example_in_the_reference_is_a_valid_value() -> None:
    """A structured setting's example (Setting.example, shown in the page) is read by the service's settings code;
    it shows every field the reference lists, and a field it does not list is refused."""
    examples = []
    for _, table, settings_class in services():
        for setting in table.settings:
            if setting.example is None:
                continue
            examples.append(setting.name)
            text = (REPO / setting.example).read_text()
            assert f'--8<-- "{setting.example}"' in (REPO / "docs/reference/settings.md").read_text()
            settings_class.from_env({**required_env(table), setting.name: text})
            if setting.fields and setting.kind == "tables":
                entries = json.loads(text)
                assert set().union(*entries) == set(setting.fields), "the example shows every field, and no other"
                odd = json.dumps([{**entries[0], "colour": "blue"}])
                with pytest.raises(SettingsError, match=f"{setting.name}.*unknown fields.*colour"):
                    settings_class.from_env({**required_env(table), setting.name: odd})
    assert "AUTH_CLIENTS" in examples


def test_the_auth_clients_example_serves_only_once_its_placeholder_secrets_are_replaced() -> None:
    from auth_server.settings import Settings

    example = (REPO / "docs_src/reference/auth_clients.json").read_text()
    settings = Settings.from_env({"AUTH_CLIENTS": example})
    assert [c.client_id for c in settings.clients if c.confidential] == ["bff", "nightly-report"]
    public = settings.client("cli")
    assert public is not None and not public.confidential
    with pytest.raises(SettingsError, match="client 'bff' client_secret is a well-known placeholder"):
        settings.check_client_secrets()
    replaced = example.replace("replace-with-a-long-random-secret", "a-real-one-" + "x" * 32)
    Settings.from_env({"AUTH_CLIENTS": replaced}).check_client_secrets()
