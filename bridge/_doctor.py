"""``rbridge doctor``: checks that both sides of rbridge are in place and work,
says what it found and how to fix what fails."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import zmq

from . import __version__

R_INSTALL_HINT = ("install R and what the worker builds with: `rbridge install-worker --apt` on Debian/Ubuntu "
                  "(or `apt-get install r-base-core r-base-dev libzmq3-dev libmsgpack-dev r-cran-jsonlite`)")
RSERVER_HINT = "install the R package rserver at version {version}: `rbridge install-worker`"
MIN_ZMQ = (4, 3, 3)
SHM_ADVISED = 256 * 2**20


@dataclass
class Check:
    """One check: what was found, and how to fix it when it failed."""

    name: str
    ok: bool
    found: str
    fix: str = ""


def _rscript() -> str | None:
    return shutil.which(os.environ.get("RBRIDGE_RSCRIPT") or "Rscript")


def _r(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = _rscript()
    if exe is None:
        raise FileNotFoundError("Rscript")
    return subprocess.run([exe, "--vanilla", "-e", code], capture_output=True, text=True, timeout=timeout)


def check_python() -> Check:
    import numpy
    import pandas
    import pyarrow
    return Check("python", True, f"Python {platform.python_version()}, rbridge {__version__}, pyzmq {zmq.__version__} "
                 f"(libzmq {zmq.zmq_version()}), numpy {numpy.__version__}, pandas {pandas.__version__}, "
                 f"pyarrow {pyarrow.__version__}")


def check_r() -> Check:
    exe = _rscript()
    if exe is None:
        return Check("R", False, "Rscript not found on PATH (or RBRIDGE_RSCRIPT)", R_INSTALL_HINT)
    out = _r('cat(R.version$major, R.version$minor, sep = ".")')
    if out.returncode != 0:
        return Check("R", False, f"{exe} failed: {out.stderr.strip()[-200:]}", R_INSTALL_HINT)
    return Check("R", True, f"R {out.stdout.strip()} ({exe})")


def check_rserver() -> Check:
    hint = RSERVER_HINT.format(version=__version__)
    out = _r('cat(as.character(packageVersion("rserver")))')
    if out.returncode != 0:
        return Check("rserver", False, "the R package rserver is not installed", hint)
    version = out.stdout.strip()
    if version != __version__:
        return Check("rserver", False, f"rserver {version} is installed, rbridge is {__version__}", hint)
    return Check("rserver", True, f"rserver {version}, as rbridge")


def check_libzmq() -> Check:
    out = _r("info <- rserver:::zmq_info(); cat(info$version, info$curve)")
    if out.returncode != 0:
        return Check("libzmq", False, "could not ask the worker's libzmq (is rserver installed?)",
                     RSERVER_HINT.format(version=__version__))
    version, curve = out.stdout.split()
    parts = tuple(int(p) for p in version.split("."))
    problems = []
    if parts < MIN_ZMQ:
        problems.append(f"older than {'.'.join(map(str, MIN_ZMQ))} (CVE-2020-15166)")
    if curve != "TRUE":
        problems.append("built without CURVE")
    if not zmq.has("curve"):
        problems.append("pyzmq's libzmq has no CURVE")
    found = f"the worker's libzmq {version}, CURVE {'yes' if curve == 'TRUE' else 'no'}; pyzmq's {zmq.zmq_version()}"
    if problems:
        return Check("libzmq", False, f"{found}: {'; '.join(problems)}",
                     "install libzmq 4.3.3 or later built with libsodium (Debian bookworm: libzmq5 4.3.4)")
    return Check("libzmq", True, found)


def check_dev_shm() -> Check:
    try:
        st = os.statvfs("/dev/shm")
    except OSError as exc:
        return Check("/dev/shm", False, f"not usable: {exc}", "mount a tmpfs at /dev/shm")
    size = st.f_frsize * st.f_blocks
    found = f"{size / 2**20:.0f} MiB, {st.f_frsize * st.f_bavail / 2**20:.0f} MiB free"
    if size < SHM_ADVISED:
        return Check("/dev/shm", False, f"{found}: large payloads fall back to slower socket frames",
                     "give /dev/shm 256 MiB or more (Docker: `shm_size: 1g`)")
    return Check("/dev/shm", True, found)


def check_round_trip() -> Check:
    import numpy as np

    from ._session import connect
    started = time.monotonic()
    try:
        with connect(startup_timeout=60) as r:
            ready = time.monotonic() - started
            if r.sum(1, 2) != 3:
                return Check("round trip", False, "sum(1, 2) did not come back as 3", "report this as a bug")
            x = np.arange(300_000, dtype=np.float64)   # 2.4 MB: a shared-memory payload
            same = bool(np.array_equal(r.call("identity", x), x))
            shm = r.uses_shared_memory
    except Exception as exc:   # every failure is the finding
        return Check("round trip", False, f"a private worker failed: {type(exc).__name__}: {exc}",
                     "fix the checks above; the worker's log is in the error")
    if not same:
        return Check("round trip", False, "a 2.4 MB vector came back changed", "report this as a bug")
    return Check("round trip", shm, f"a private worker answered in {ready:.2f} s; 2.4 MB both ways "
                 f"{'through shared memory' if shm else 'through socket frames (shared memory failed)'}",
                 "" if shm else "check /dev/shm (mounted, writable, not full)")


CHECKS: list[Callable[[], Check]] = [check_python, check_r, check_rserver, check_libzmq, check_dev_shm,
                                     check_round_trip]


def run_checks() -> list[Check]:
    """Runs every check; one that cannot run is a failed check, never a crash."""
    results = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            results.append(check())
        except FileNotFoundError:   # no Rscript: said by the R check
            results.append(Check(name, False, "not checked: R is not available", R_INSTALL_HINT))
        except Exception as exc:
            results.append(Check(name, False, f"{type(exc).__name__}: {exc}", R_INSTALL_HINT))
    return results


def as_dicts(results: list[Check]) -> list[dict]:
    return [asdict(c) for c in results]
