"""The README is the landing page: its two commands are the ones that work (CI runs the second verbatim), it stays
short, and its links into the documentation lead somewhere. (That every setting a service reads is documented is
tests/test_settings_reference.py's job: the settings reference in docs/, generated from the declarations.)"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    run_it, run_tests = blocks[0], blocks[1]
    assert run_it == "pip install -e . && bff stack"
    assert run_tests == "scripts/test"
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == run_tests


def test_every_local_link_of_the_readme_leads_to_a_file() -> None:
    links = re.findall(r"\]\(((?!https?:|#)[^)#\s]+)", README)
    for link in links:
        assert (REPO / link).exists(), link


def test_the_readme_is_a_landing_page() -> None:
    """What it is, the picture, the two commands, the links: the detail lives in docs/ (at most 150 lines)."""
    assert len(README.splitlines()) <= 150
    assert README.count("](docs/") >= 10
