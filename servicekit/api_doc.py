"""docs/reference/verifier.md, made from jwt_bff_verifier's public API when the site is built.

The docs build calls ``render()`` (the hook in docs_src/mkdocs_hooks.py), so the page cannot go stale: the public
API is each module's ``__all__``, and its signatures and docstrings are the page. ``python -m servicekit.api_doc``
prints it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python -m servicekit.api_doc"
MODULES = (
    ("jwt_bff_verifier", "the verifier, its claims and its errors"),
    ("jwt_bff_verifier.starlette", "Starlette (and any ASGI app): the middleware and endpoint guards"),
    ("jwt_bff_verifier.fastapi", "FastAPI: dependencies (extra `fastapi`)"),
    ("jwt_bff_verifier.testing", "test helpers: keys, tokens and an issuer, without an auth server"),
)


def _markdown(doc: str) -> str:
    """reST-ish docstrings as Markdown: ``::`` literal blocks become fenced text blocks."""
    lines, out, i = doc.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            text = line.rstrip()[:-2].rstrip()
            if text:
                out.append(text + ":")
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            out += ["", "```text", *(b[indent:] for b in block), "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip()


def _signature(name: str, obj: Any) -> str:
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return name
    # annotations are strings (from __future__ import annotations): shown unquoted; no memory addresses
    signature = re.sub(r"(: |-> )'([^']+)'", r"\1\2", signature)
    return f"{name}{re.sub(r' at 0x[0-9a-f]+', '', signature)}"


def _entry(module: str, name: str, obj: Any) -> list[str]:
    lines = [f"### `{name}`", ""]
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            bases = ", ".join(base.__name__ for base in obj.__bases__)
            lines += [f"`class {name}({bases})`", ""]
        elif obj.__init__ is not object.__init__ and "__init__" in vars(obj):
            lines += [
                "```text",
                "class " + _signature(name, obj.__init__).replace("(self, ", "(").replace("(self)", "()"),
                "```",
                "",
            ]
        else:
            lines += [f"`class {name}`", ""]
    elif callable(obj):
        lines += ["```text", _signature(name, obj), "```", ""]
    else:
        shown = tuple(obj) if isinstance(obj, dict) else obj  # a table of algorithms: its names
        lines += [f"`{name} = {shown!r}`", ""]
        return lines
    doc = inspect.getdoc(obj)
    if doc and not (inspect.isclass(obj) and doc == inspect.getdoc(obj.__mro__[1])):
        lines += [_markdown(doc), ""]
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for member, value in vars(obj).items():
            if member.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                continue
            target = value.fget if isinstance(value, property) else value
            shown = (
                member
                if isinstance(value, property)
                else _signature(member, target).replace("(self, ", "(").replace("(self)", "()")
            )
            prefix = "async " if inspect.iscoroutinefunction(target) else ""
            summary = (inspect.getdoc(target) or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"- `{prefix}{shown}`" + (f": {_markdown(summary)}" if summary else ""))
        if lines[-1].startswith("- "):
            lines.append("")
    return lines


def render() -> str:
    lines = [
        "# Verifier library",
        "",
        "",
        "The public API of `jwt_bff_verifier` (distribution `jwt-bff-verifier`; also importable as",
        "`resource_server.verifier`): each module's `__all__`, with signatures and docstrings. How to use it:",
        "[Your API in Python](../guides/your-api-python.md).",
        "",
    ]
    for module_name, what in MODULES:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", what[0].upper() + what[1:] + ".", ""]
        for name in module.__all__:
            lines += _entry(module_name, name, getattr(module, name))
    text = "\n".join(lines).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main() -> int:
    print(render(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
