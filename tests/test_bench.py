"""The benchmark scripts start (their --help), and bench/peers.py's table reads its figures right. Speed itself is
never asserted here: bench/ measures it (bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.peers import Figure, main, table

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["run", "edge", "durability", "peers", "profile_bff", "verifier", "dpop", "cpu_per_request"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_bench_script_starts(name: str) -> None:
    result = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


FIGURES = [
    Figure("nginx", "nginx alone", 10_000, 1.0, 5.0, 20.0, 0.0, 0),
    Figure("bff", "jwt-bff proxy", 5_000, 2.0, 9.0, 120.0, 1.0, 0),
    Figure("nginx_auth", "nginx + /bff/auth", 8_000, 1.5, 7.0, 70.0, 1.002, 0, 45.0),
    Figure("apache", "Apache + mod_auth_openidc", 4_000, 3.0, 12.0, 200.0, 2.0, 3),
]


def test_peers_table_and_ratios() -> None:
    text = table(FIGURES)
    assert "| nginx + /bff/auth | 8,000 | 1.50 | 7.00 | 70 | 45 | +50 | 1.002 |" in text  # 45 of 70 the BFF's
    assert "| Apache + mod_auth_openidc | 4,000 | 3.00 | 12.00 | 200 |  | +180 | 2.000 |" in text
    assert "BFF proxy / Apache + mod_auth_openidc: 1.25x req/s, 1.67x less CPU per request" in text
    assert "nginx + /bff/auth / Apache + mod_auth_openidc: 2.00x req/s, 2.86x less CPU per request" in text
    assert "ours +50 µs, mod_auth_openidc +180 µs" in text


def test_peers_writes_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "peers.json"
    main(["--json", str(out), "--seconds", "1"], run=lambda args: FIGURES)
    assert '"cpu_us": 70.0' in out.read_text()
    assert "| Apache + mod_auth_openidc | 4,000 |" in capsys.readouterr().out
