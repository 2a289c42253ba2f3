"""deploy/: the alert rules are valid and fire when they should (Debian's promtool)."""
from __future__ import annotations

import subprocess
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_rules_are_valid():
    r = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "flowaudit-rules.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_reliability_alerts_fire_when_they_should():
    r = subprocess.run(["promtool", "test", "rules", "flowaudit-rules.test.yml"], cwd=DEPLOY,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
