"""Every Mermaid diagram of docs/ parses and draws, with the Mermaid version tests/docs_node pins, in Chromium.

The site draws them in the reader's browser (mkdocs-material loads Mermaid); a syntax error would show as a bomb
icon there and nowhere else (a `;` in a sequence message once did)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser.test_demo_page import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import REPO

MERMAID = REPO / "tests" / "docs_node" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"


def test_every_diagram_of_the_docs_parses_and_draws(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert MERMAID.exists(), "mermaid is missing: npm ci --prefix tests/docs_node (scripts/test does)"
    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (scripts/test installs it)"
    diagrams = [
        (f"{page.relative_to(REPO)} #{n}", body)
        for page in sorted((REPO / "docs").rglob("*.md"))
        for n, body in enumerate(re.findall(r"^```mermaid\n(.*?)^```", page.read_text(), re.S | re.M))
    ]
    assert len(diagrams) >= 6  # the landing picture and the five flows, at least
    page_file = tmp_path / "diagrams.html"
    page_file.write_text(f'<!doctype html><meta charset="utf-8"><body><script src="{MERMAID.as_uri()}"></script>')
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            errors = page.evaluate(
                """async (sources) => {
                    mermaid.initialize({startOnLoad: false});
                    const errors = [];
                    for (const [i, source] of sources.entries()) {
                        try { await mermaid.parse(source); await mermaid.render('svg' + i, source); }
                        catch (e) { errors.push([i, String(e && e.message || e).slice(0, 300)]); }
                    }
                    return errors;
                }""",
                [body for _, body in diagrams],
            )
        finally:
            browser.close()
    assert [(diagrams[i][0], message) for i, message in errors] == []
