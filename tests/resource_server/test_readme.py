"""The README's example test for resource teams runs, exactly as printed."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.anyio


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Resource server (`resource-server`)") :]
    section = section[: section.index("\n### ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


async def test_the_readme_example_test_passes() -> None:
    block = next(b for b in readme_blocks() if "async def test_" in b)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, "README.md", "exec"), namespace)
    await namespace["test_orders_need_a_valid_token_with_the_scope"]()


def test_the_readme_usage_example_builds_an_app() -> None:
    block = next(b for b in readme_blocks() if "TokenVerifier(" in b)
    namespace: dict[str, Any] = {"__name__": "readme_usage"}
    exec(compile(block.replace("    ...", "    return None"), "README.md", "exec"), namespace)
    assert namespace["verifier"].audience == "orders"


async def test_the_readme_fastapi_example_and_its_test_pass() -> None:
    blocks = readme_blocks()
    app_block = next(b for b in blocks if "from fastapi import" in b)
    test_block = next(b for b in blocks if "async def test_fastapi_" in b)
    namespace: dict[str, Any] = {"__name__": "readme_fastapi"}
    exec(compile(app_block, "README.md", "exec"), namespace)  # the app, as printed
    exec(compile(test_block, "README.md", "exec"), namespace)  # its test, in the same module
    await namespace["test_fastapi_orders_need_a_valid_token_with_the_scope"]()
