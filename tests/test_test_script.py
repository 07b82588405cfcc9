"""scripts/test does the set-up itself: a missing tool becomes an apt-get install, an absent node-oidc-provider an
`npm ci`, the project a `pip install -e '.[test]'`, and then pytest runs with the arguments given.

Run against a copy of the repository with a PATH of our own: the tools present are links to the real ones, `caddy`
is left out, and apt-get, sudo, npm and pip are stand-ins that write down how they were called."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
"""
FAKE_NPM = RECORDER + 'mkdir -p "$3/node_modules/oidc-provider" "$3/node_modules/mermaid"\n'
# the interpreter: pip is written down, not run (it would reinstall the shared environment); pytest runs for real
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip $*" >> "$CALLS"; exit 0; fi
exec {python} "$@"
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    tree = tmp_path / "repo"
    tree.mkdir()
    for name in ("scripts", "tests", "pyproject.toml", "README.md", ".ci"):
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("node_modules", "__pycache__")
            shutil.copytree(source, tree / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy(source, tree / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "dirname", "basename", "mkdir", "redis-server", "promtool", "node"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed for this test"
        (bin_dir / tool).symlink_to(found)
    for tool in ("apt-get", "sudo"):
        _script(bin_dir / tool, RECORDER)
    _script(bin_dir / "npm", FAKE_NPM)
    _script(bin_dir / "python3", FAKE_PYTHON.format(python=sys.executable))
    env = {
        "PATH": str(bin_dir),
        "CALLS": str(tmp_path / "calls"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(tree),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return tree, env


def test_the_test_command_installs_what_is_missing_then_runs_pytest_with_its_arguments(
    sandbox: tuple[Path, dict[str, str]],
) -> None:
    tree, env = sandbox
    args = ["tests/test_readme.py", "-q", "-p", "no:cacheprovider", "-k", "ci_runs_exactly"]
    done = subprocess.run([str(tree / "scripts" / "test"), *args], cwd=tree, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    calls = Path(env["CALLS"]).read_text().splitlines()
    apt = [call for call in calls if "apt-get install" in call]
    assert len(apt) == 1 and " caddy" in apt[0], calls
    assert "redis-server" not in apt[0] and "nodejs" not in apt[0]  # present tools are not installed again
    as_root = os.geteuid() == 0
    assert any(call.startswith("sudo ") for call in calls) is not as_root  # sudo only when not root
    assert "npm ci --prefix tests/interop/node_op --no-audit --no-fund" in calls
    assert "npm ci --prefix tests/docs_node --no-audit --no-fund" in calls
    assert "pip -m pip install -q -e .[test]" in calls
    # a second run finds node-oidc-provider in place: no npm this time
    Path(env["CALLS"]).unlink()
    done = subprocess.run([str(tree / "scripts" / "test"), *args], cwd=tree, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [call for call in Path(env["CALLS"]).read_text().splitlines() if call.startswith("npm")]


def test_ci_runs_the_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == "scripts/test"
    assert os.access(REPO / "scripts" / "test", os.X_OK) and os.access(REPO / ".ci" / "run", os.X_OK)
