"""The two distributions, built as a release would build them and installed where nothing else is.

`jwt-bff` (the services) and `jwt-bff-verifier` (the library resource teams install) are built with
`python -m build` (sdist, then the wheel from it) from a copy of the tree, then each wheel goes into a fresh
`python -m venv`. The verifier's dependency closure must hold none of the services' dependencies, and the
documentation's Python examples (docs_src/python_api) must pass there, with no jwt-bff around. The builds are made
once per session (marker `packaging`: about a minute, most of it pip; `-m 'not load and not packaging'` skips it
while iterating on something else).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.packaging

VERSION_RE = re.compile(r'^version = "([^"]+)"$', re.M)
SERVICE_DEPENDENCIES = {"redis", "aiohttp", "argon2-cffi", "uvicorn", "fakeredis", "jinja2", "prometheus-client"}
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", "*.egg-info", ".*_cache", "site", "build", "dist", "keys", "results"
)


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PIP_REQUIRE_VIRTUALENV"}}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _venv(path: Path) -> Path:
    """A fresh virtual environment; packages go in with this interpreter's pip (`pip --python`): seconds, where
    seeding each venv with its own pip (ensurepip) took ~30 s on a loaded machine."""
    _run(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


def _pip_install(python: Path, *requirements: str | Path) -> None:
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check", *requirements)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both distributions built once: {"jwt-bff": wheel, "jwt-bff-verifier": wheel}."""
    root = tmp_path_factory.mktemp("packages")
    tree = root / "tree"
    shutil.copytree(REPO, tree, symlinks=True, ignore=NOT_COPIED)  # the build writes egg-info: not into our tree
    # One build environment for the four builds (each sdist, then the wheel from it), made as build's isolation
    # would make it from [build-system] requires, instead of four (~20 s each under load).
    builder = _venv(root / "build-env")
    (requires,) = re.findall(r"^requires = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M)
    _pip_install(builder, "build", *re.findall(r'"([^"]+)"', requires))
    out = root / "dist"
    projects = {"jwt-bff": tree, "jwt-bff-verifier": tree / "distributions" / "jwt-bff-verifier"}
    for name, path in projects.items():
        _run(builder, "-m", "build", "--no-isolation", "--outdir", out / name, path)
    return {name: next((out / name).glob("*.whl")) for name in projects}


def _installed(python: Path) -> set[str]:
    # run outside any source tree: `python -c` puts its working directory on sys.path, and a checkout installed
    # with `pip install -e .` holds jwt_bff.egg-info there, which importlib.metadata would count as installed
    code = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    return {re.sub(r"[-_.]+", "-", name).lower() for name in json.loads(_run(python, "-c", code, cwd=python.parent))}


def test_both_distributions_carry_one_version() -> None:
    (services,) = VERSION_RE.findall((REPO / "pyproject.toml").read_text())
    verifier_project = REPO / "distributions" / "jwt-bff-verifier" / "pyproject.toml"
    (verifier,) = VERSION_RE.findall(verifier_project.read_text())
    assert services == verifier
    build_system = re.compile(r"^\[build-system\]\n(?:.*\n)*?\n", re.M)  # built the same way (one build env)
    assert build_system.findall((REPO / "pyproject.toml").read_text()) == build_system.findall(
        verifier_project.read_text()
    )


def test_the_wheels_hold_what_they_should(wheels: dict[str, Path]) -> None:
    verifier = zipfile.ZipFile(wheels["jwt-bff-verifier"]).namelist()
    assert {name.split("/")[0] for name in verifier if not name.startswith("jwt_bff_verifier-")} == {"jwt_bff_verifier"}
    assert "jwt_bff_verifier/py.typed" in verifier and "jwt_bff_verifier/fastapi.py" in verifier
    services = zipfile.ZipFile(wheels["jwt-bff"]).namelist()
    tops = {name.split("/")[0] for name in services if not name.startswith("jwt_bff-")}
    assert tops == {"auth_server", "bff", "resource_server", "servicekit", "jwt_bff_verifier"}
    # the package data the services serve, and the verifier shipped with them (one tree, the same files)
    assert any(name.startswith("auth_server/templates/") for name in services)
    assert any(name.startswith("bff/static/") for name in services)
    assert {name for name in services if name.startswith("jwt_bff_verifier/")} == {
        name for name in verifier if name.startswith("jwt_bff_verifier/")
    }


def test_the_verifier_installs_alone_and_its_documented_examples_run(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv")
    wheel = wheels["jwt-bff-verifier"]
    _pip_install(python, wheel)
    closure = _installed(python)
    assert {"jwt-bff-verifier", "pyjwt", "cryptography", "httpx"} <= closure
    assert not closure & (SERVICE_DEPENDENCIES | {"starlette", "fastapi", "jwt-bff"}), closure
    # the core imports with no web framework installed; the test helpers too
    _run(python, "-c", "import jwt_bff_verifier, jwt_bff_verifier.testing", cwd=tmp_path)

    _pip_install(python, f"{wheel}[starlette,fastapi]")
    closure = _installed(python)
    assert {"starlette", "fastapi"} <= closure
    assert not closure & (SERVICE_DEPENDENCIES | {"jwt-bff"}), closure
    isolated = (
        "import importlib.util as u\n"
        "for name in ('bff', 'auth_server', 'resource_server', 'servicekit'):\n"
        "    assert u.find_spec(name) is None, name\n"
    )
    _run(python, "-c", isolated, cwd=tmp_path)

    # the distribution's own page (its PyPI description) shows code: it runs as printed
    page = (REPO / "distributions" / "jwt-bff-verifier" / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", page, re.S)
    _run(python, "-c", snippet, cwd=tmp_path)

    # the documentation's examples, as a resource team would copy them, with pytest to run their tests
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "docs_src" / "python_api", examples, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "docs_src" / "conftest.py", examples)
    _pip_install(python, "pytest")
    output = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", examples, cwd=examples)
    assert re.search(r"\b2 passed\b", output), output


def test_the_services_install_and_every_command_tells_its_version(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv")
    _pip_install(python, wheels["jwt-bff"])
    (version,) = VERSION_RE.findall((REPO / "pyproject.toml").read_text())
    for command in ("bff", "auth-server", "resource-server"):
        out = _run(python.parent / command, "--version", cwd=tmp_path)
        assert out.strip() == f"{command} {version}"
    same = (
        "import jwt_bff_verifier.errors, resource_server.verifier.errors as old\n"
        "assert old.VerifierError is jwt_bff_verifier.errors.VerifierError\n"
        "import bff.app, auth_server.app, resource_server.app\n"
    )
    _run(python, "-c", same, cwd=tmp_path)
