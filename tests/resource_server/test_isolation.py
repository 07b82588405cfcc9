"""The verifier library (`jwt_bff_verifier`, its own distribution) is importable alone, and the old name
`resource_server.verifier` is the same modules, not a copy."""

from __future__ import annotations

import ast
import subprocess
import sys

from ..conftest import REPO

VERIFIER = REPO / "jwt_bff_verifier"
ALLOWED_THIRD_PARTY = {"jwt", "cryptography", "httpx", "starlette"}
OPTIONAL = {"fastapi.py": {"fastapi"}}  # an optional extra, imported by that module alone


def test_the_verifier_imports_nothing_from_the_rest_of_jwt_bff() -> None:
    for path in VERIFIER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = ALLOWED_THIRD_PARTY | OPTIONAL.get(path.name, set())
                assert top in allowed or top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_importing_the_verifier_loads_no_other_jwt_bff_module() -> None:
    code = (
        "import sys, jwt_bff_verifier, jwt_bff_verifier.starlette, jwt_bff_verifier.testing\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('auth_server', 'bff', 'resource_server',"
        " 'servicekit', 'redis', 'prometheus_client', 'aiohttp', 'argon2', 'uvicorn', 'jinja2', 'fakeredis')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_verifier_works_with_the_services_plumbing_blocked() -> None:
    """With ``servicekit`` (the services' shared plumbing) unimportable, the verifier still imports and verifies."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('servicekit', 'auth_server', 'bff'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from jwt_bff_verifier.testing import FakeIssuer\n"
        "import jwt_bff_verifier.starlette\n"
        "import asyncio\n"
        "issuer = FakeIssuer()\n"
        "claims = asyncio.run(issuer.verifier().verify(issuer.token('notes:read')))\n"
        "assert claims['scope'] == 'notes:read', claims\n"
        "try:\n"
        "    import servicekit.redis\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('the block does not work')\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "ok"


def test_the_library_ships_py_typed() -> None:
    assert (VERIFIER / "py.typed").exists()


def test_the_old_name_is_the_same_modules_not_a_copy() -> None:
    """``resource_server.verifier.X`` is ``jwt_bff_verifier.X``: what one raises, the other's ``except`` catches."""
    code = (
        "import sys, asyncio\n"
        "from resource_server.verifier.testing import FakeIssuer\n"
        "from resource_server.verifier import InvalidToken as OldInvalid, VerifierError as OldError\n"
        "import resource_server.verifier.starlette as old_starlette, resource_server.verifier.fastapi as old_fastapi\n"
        "import jwt_bff_verifier, jwt_bff_verifier.errors, jwt_bff_verifier.starlette, jwt_bff_verifier.fastapi\n"
        "import resource_server.verifier\n"
        "assert resource_server.verifier is jwt_bff_verifier\n"
        "assert old_starlette is jwt_bff_verifier.starlette and old_fastapi is jwt_bff_verifier.fastapi\n"
        "assert OldInvalid is jwt_bff_verifier.errors.InvalidToken\n"
        "assert jwt_bff_verifier.starlette.__spec__.name == 'jwt_bff_verifier.starlette'\n"
        "names = [getattr(m, '__name__', '') for m in list(sys.modules.values())]\n"
        "copies = [n for n in names if n.startswith('resource_server.verifier')]\n"
        "assert copies == [], copies\n"
        "issuer = FakeIssuer()\n"
        "try:\n"
        "    asyncio.run(jwt_bff_verifier.TokenVerifier(issuer.issuer, 'notes').verify('not-a-jwt'))\n"
        "except OldError:\n"
        "    print('caught')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "caught"
