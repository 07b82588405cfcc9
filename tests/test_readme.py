"""The README stays true: its two commands are the ones CI runs. (That every setting a service reads is documented
is tests/test_settings_reference.py's job now: the settings reference in docs/, generated from the declarations.)"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    run_it, run_tests = blocks[0], blocks[1]
    assert run_it == "pip install -e . && bff stack"
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == run_tests
