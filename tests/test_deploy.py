"""deploy/: the alert rules are valid and fire when they should (Debian's promtool); the unit restarts sensibly."""
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


def test_the_unit_does_not_restart_into_what_waits_for_an_operator():
    """systemd restarts the stream on failure, but not on the exits an operator must act on: a
    settings error (2), a broker log that no longer matches the files (3), an unreadable resume
    file (5).  A restart loop would only repeat them."""
    import configparser

    from flowaudit.service import EXIT_LOG_RESET, EXIT_STORAGE

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEPLOY / "flowaudit-stream.service")
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert set(svc["RestartPreventExitStatus"].split()) == {"2", str(EXIT_LOG_RESET), str(EXIT_STORAGE)}
