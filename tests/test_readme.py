"""The README stays true: its two commands are the ones CI runs, and every setting a service reads is documented."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_every_environment_variable_a_service_reads_is_documented() -> None:
    read: set[str] = set()
    for package in ("auth_server", "resource_server", "bff", "servicekit"):
        for source in (REPO / package).rglob("*.py"):
            read |= set(re.findall(r'"((?:AUTH|BFF|RS|REDIS|HTTP)_[A-Z_]+)"', source.read_text()))
    assert {"REDIS_URL", "AUTH_ISSUER", "BFF_CLIENT_SECRET", "RS_AUDIENCE"} <= read  # the scan itself works
    missing = sorted(name for name in read if f"`{name}`" not in README)
    assert missing == []


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    run_it, run_tests = blocks[0], blocks[1]
    assert run_it == "pip install -e . && bff stack"
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == run_tests
