"""The verifier library under its old name: ``resource_server.verifier`` *is* ``jwt_bff_verifier``.

The library moved to its own package (and its own distribution, ``jwt-bff-verifier``); the sample notes API and
code written against the old name keep working. Not a copy: ``resource_server.verifier`` and every
``resource_server.verifier.<sub>`` are the very module objects of ``jwt_bff_verifier``, so a class imported under
one name is the class under the other (``except VerifierError`` catches what either raises).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

import jwt_bff_verifier

OLD = __name__
NEW = jwt_bff_verifier.__name__


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``resource_server.verifier.<sub>`` with the module ``jwt_bff_verifier.<sub>`` itself."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(OLD + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(NEW + spec.name[len(OLD) :])
        _REAL_SPECS.setdefault(module.__name__, module.__spec__)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system has just set the alias's spec on the module: give it back its own (reload, pickling).
        module.__spec__ = _REAL_SPECS[module.__name__]


_REAL_SPECS: dict[str, importlib.machinery.ModuleSpec | None] = {}


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
sys.modules[OLD] = jwt_bff_verifier
