"""deploy/prometheus/alerts.yml passes `promtool check rules`, and its unit tests (alerts.test.yml: each alert fires on
its failure, not on a healthy or noisy series) pass `promtool test rules` (Debian's prometheus package, which the
test command installs when missing; no promtool fails here, never skips)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's prometheus package (scripts/test does)"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_would_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """A copy of the rules whose Redis alert waits for an hour: its unit test must fail."""
    rules = (RULES / "alerts.yml").read_text()
    broken = rules.replace(
        "expr: sum(rate(bff_store_errors_total[2m])) > 0\n        for: 1m",
        "expr: sum(rate(bff_store_errors_total[2m])) > 0\n        for: 1h",
    )
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts.test.yml").write_text((RULES / "alerts.test.yml").read_text())
    done = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert done.returncode != 0 and "BFFRedisDown" in done.stdout + done.stderr
