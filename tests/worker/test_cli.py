"""`rbridge doctor` and `rbridge --version` (server mode's subcommands are
tested in tests/server/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import bridge


def rbridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, **(env or {})))


def test_version():
    out = rbridge("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rbridge {bridge.__version__}"


def test_doctor_passes_every_check_on_a_working_setup():
    out = rbridge("doctor", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert list(checks) == ["python", "R", "rserver", "libzmq", "/dev/shm", "round trip"]
    assert all(c["ok"] and not c["fix"] for c in checks.values())
    assert "R 4." in checks["R"]["found"] and f"rserver {bridge.__version__}" in checks["rserver"]["found"]
    assert "CURVE yes" in checks["libzmq"]["found"] and "shared memory" in checks["round trip"]["found"]
    text = rbridge("doctor")
    assert text.returncode == 0 and text.stdout.count("ok   ") == 6


def test_doctor_says_what_fails_and_how_to_fix_it():
    out = rbridge("doctor", env={"RBRIDGE_RSCRIPT": "/nonexistent/Rscript"})
    assert out.returncode == 1
    assert "FAIL R: Rscript not found" in out.stdout and "fix: install R" in out.stdout
    assert "FAIL round trip" in out.stdout and "ok   python" in out.stdout
