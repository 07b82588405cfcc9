"""The documentation site builds with `mkdocs build --strict`: a broken link, a page outside the nav, a nav entry
with no page or a snippet whose file is gone fails the suite, not a reader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    index = (site / "index.html").read_text()
    assert "jwt-bff" in index
    # Mermaid fences reach the page as diagrams for the theme to draw, not as highlighted code.
    assert '<pre class="mermaid"><code>flowchart LR' in index
    # pages made from the code at build time (docs_src/mkdocs_hooks.py): the verifier's API, signatures and all
    verifier = (site / "reference" / "verifier" / "index.html").read_text()
    assert "class TokenVerifier(issuer: str, audience: str" in verifier and "FakeIssuer" in verifier


def test_every_test_the_docs_name_exists() -> None:
    """A page that says "the test that shows it is tests/x.py::test_y" must not outlive that test."""
    named = set()
    for page in (REPO / "docs").rglob("*.md"):
        named |= {(page.name, path, name) for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", page.read_text())}
    assert len({path for _, path, _ in named}) >= 10  # the security page alone names more files than that
    missing = []
    for page, path, name in sorted(named):
        source = REPO / path
        if not source.exists() or not re.search(rf"^(async )?def {name}\(", source.read_text(), re.M):
            missing.append(f"{page}: {path}::{name}")
    assert missing == []


def test_the_routes_reference_names_exactly_the_fields_a_route_takes() -> None:
    from bff.routes import FIELDS

    page = (REPO / "docs" / "reference" / "routes.md").read_text()
    table = set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    assert table == set(FIELDS)


def test_the_routes_example_is_a_valid_bff_routes() -> None:
    from bff.routes import parse_routes

    routes = parse_routes((REPO / "docs_src" / "reference" / "routes.json").read_text())
    assert [routes[name].token for name in ("notes", "catalog", "reports", "status")] == [
        "user",
        "optional",
        "client",
        "none",
    ]
    assert routes["chat"].websocket and routes["orders"].resource == "https://orders.example"


def test_every_program_in_the_docs_is_a_file_a_test_runs() -> None:
    """Python and JavaScript in a page come from a file (``--8<-- "docs_src/..."``), which a test runs: an example
    typed into the page would rot unseen (FastAPI's docs_src habit)."""
    inline = []
    for page in (REPO / "docs").rglob("*.md"):
        for lang, body in re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", page.read_text(), re.S | re.M):
            if lang in {"python", "py", "js", "javascript", "ts", "typescript"} and "--8<--" not in body:
                inline.append(f"{page.relative_to(REPO)}: {body.splitlines()[0] if body else ''}")
    assert inline == []
