"""The settings reference (docs/reference/settings.md) cannot drift (DESIGN §13): it is generated from the
declarations, every environment variable the code reads is in it, and it names none the code does not read."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from servicekit import settings_doc

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
