"""docs/reference/cli.md is the commands' own parsers written out: a flag or sub-command added, renamed or removed
in the code and not in the page fails here (run `python -m servicekit.cli_doc`)."""

from __future__ import annotations

import argparse
import importlib

from servicekit import cli_doc


def test_the_cli_reference_matches_the_parsers() -> None:
    assert cli_doc.OUTPUT.read_text() == cli_doc.render(), f"docs/reference/cli.md is stale: run `{cli_doc.COMMAND}`"


def test_the_reference_names_every_command_and_flag() -> None:
    """The generator itself leaves nothing out: every sub-command path and every option string is on the page."""
    page = cli_doc.render()

    def walk(path: str, parser: argparse.ArgumentParser) -> int:
        assert f"`{path}`" in page, path
        seen = 1
        for action in parser._actions:
            for flag in action.option_strings:
                assert f"`{flag}`" in page.split(f"`{path}`", 1)[1], (path, flag)
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    seen += walk(f"{path} {name}", sub)
        return seen

    total = 0
    for name, module in cli_doc.COMMANDS:
        parser = cli_doc.parser_of(importlib.import_module(module).main)
        assert "--version" in parser._option_string_actions, name
        total += walk(name, parser)
    assert total >= 10  # bff serve/stack, auth-server keys rotate/users add/sessions revoke, ... (the walk works)
