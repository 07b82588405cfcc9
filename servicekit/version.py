"""``--version`` for every command, from the installed distribution's metadata (one number: pyproject.toml's)."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "jwt-bff"


def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed: say so rather than guess
        return "unknown (not installed: pip install -e .)"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {installed_version()}", help="print the version and exit"
    )
