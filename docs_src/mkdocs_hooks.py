"""mkdocs hooks (mkdocs.yml `hooks:`): pages made from the code when the site is built, so they cannot go stale."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GENERATED = {"reference/verifier.md": "servicekit.api_doc"}


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    module = GENERATED.get(page.file.src_uri)
    if module is None:
        return markdown
    import importlib

    return str(importlib.import_module(module).render())
