"""The examples' tests run on asyncio (anyio's pytest plugin would also try trio where it is installed)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
