"""A pip user's set-up: the wheel carries the R sources; in a fresh virtual
environment, ``rbridge install-worker`` builds the worker and ``rbridge
doctor`` passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEFT_OUT = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "out*", "*.o", "*.so", "__pycache__",
                                  ".pytest_cache", ".ruff_cache", ".hypothesis", "results")


def run(*command, env=None, timeout=900):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


@pytest.mark.timeout(1800)
def test_the_wheel_installs_the_worker_in_a_fresh_environment(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=LEFT_OUT)
    built = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", src)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("rbridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("DESCRIPTION", "NAMESPACE", "R/plots.R", "src/plots.c", "src/rserver.h", "src/Makevars"):
        assert f"bridge/rserver_src/{part}" in names
    assert not any(n.endswith((".o", ".so")) for n in names)

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    installed = run(venv / "bin" / "pip", "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr[-2000:]
    rbridge = venv / "bin" / "rbridge"

    # without R on the PATH it says what is missing and how to get it, and installs nothing
    empty = tmp_path / "empty-path"
    empty.mkdir()
    lacking = run(rbridge, "install-worker", env={"PATH": str(empty)})
    assert lacking.returncode == 1
    assert "r-base-core" in lacking.stdout and "rbridge install-worker --apt" in lacking.stdout

    library = tmp_path / "rlib"
    done = run(rbridge, "install-worker", "--library", library)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rserver 0.1.0 installed" in done.stdout
    assert (library / "rserver" / "libs" / "rserver.so").is_file()

    doctor = run(rbridge, "doctor", "--json", env={"R_LIBS": str(library)}, timeout=120)
    checks = json.loads(doctor.stdout)
    assert doctor.returncode == 0, checks
    assert all(c["ok"] for c in checks) and {"rserver", "libzmq", "round trip"} <= {c["name"] for c in checks}
    where = run("Rscript", "-e", "cat(find.package('rserver'))", env={"R_LIBS": str(library)})
    assert Path(where.stdout.strip()).resolve() == (library / "rserver").resolve()
