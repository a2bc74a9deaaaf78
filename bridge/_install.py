"""``rbridge install-worker``: builds and installs the R package ``rserver``
from the sources shipped inside this Python distribution (a source checkout's
``rserver/`` when rbridge is installed in editable mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__

_PACKAGE_DIR = Path(__file__).resolve().parent


def worker_sources() -> Path | None:
    """The rserver sources: in the wheel (bridge/rserver_src), or beside the
    package in a source checkout."""
    for candidate in (_PACKAGE_DIR / "rserver_src", _PACKAGE_DIR.parent / "rserver"):
        if (candidate / "DESCRIPTION").is_file():
            return candidate
    return None


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _r_says(code: str) -> str | None:
    """What Rscript prints for ``code``, or None when R cannot run it."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    done = _run(rscript, "--vanilla", "-e", code)
    return done.stdout.strip() if done.returncode == 0 else None


def _header(name: str) -> bool:
    dirs = ["/usr/include", "/usr/local/include", *os.environ.get("C_INCLUDE_PATH", "").split(":"),
            *os.environ.get("CPATH", "").split(":")]
    return any(d and (Path(d) / name).is_file() for d in dirs)


def _can_compile_for_r() -> bool:
    """R's headers and the C compiler R builds packages with."""
    r = shutil.which("R")
    if r is None:
        return False
    include = _run(r, "RHOME")
    cc = _run(r, "CMD", "config", "CC")
    if include.returncode != 0 or cc.returncode != 0 or not cc.stdout.split():
        return False
    headers = (Path(include.stdout.strip()) / "include" / "R.h").is_file() or Path("/usr/share/R/include/R.h").is_file()
    return headers and shutil.which(cc.stdout.split()[0]) is not None


@dataclass(frozen=True)
class Requirement:
    """Something building the worker needs: how to check it, and the Debian
    package that provides it."""

    what: str
    present: Callable[[], bool]
    debian: str


REQUIREMENTS = [
    Requirement("R", lambda: shutil.which("R") is not None and shutil.which("Rscript") is not None, "r-base-core"),
    Requirement("R's headers and a C compiler", _can_compile_for_r, "r-base-dev"),
    Requirement("the ZeroMQ headers (zmq.h)", lambda: _header("zmq.h"), "libzmq3-dev"),
    Requirement("the msgpack-c headers (msgpack.h)", lambda: _header("msgpack.h"), "libmsgpack-dev"),
    Requirement("the R package jsonlite",
                lambda: _r_says('cat(requireNamespace("jsonlite", quietly = TRUE))') == "TRUE", "r-cran-jsonlite"),
]


def missing_requirements() -> list[Requirement]:
    return [req for req in REQUIREMENTS if not req.present()]


def _apt_install(packages: list[str], say: Callable[[str], None]) -> bool:
    apt = shutil.which("apt-get")
    if apt is None:
        say("install-worker: --apt needs apt-get (Debian/Ubuntu); install the packages above yourself")
        return False
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, apt, "update", "-q"],
                    [*sudo, apt, "install", "-y", "-q", "--no-install-recommends", *packages]):
        say("+ " + " ".join(command))
        if subprocess.run(command, env=env, check=False).returncode != 0:
            say("install-worker: apt-get failed")
            return False
    return True


def install_worker(apt: bool = False, library: str | None = None, say: Callable[[str], None] = print) -> int:
    """Builds and installs rserver; returns the command's exit status."""
    sources = worker_sources()
    if sources is None:
        say("install-worker: this rbridge distribution carries no R sources (bridge/rserver_src); "
            "reinstall rbridge from its wheel or source tree")
        return 1
    missing = missing_requirements()
    if missing:
        say("install-worker: building the R worker needs:")
        for req in missing:
            say(f"  - {req.what} (Debian/Ubuntu: {req.debian})")
        packages = sorted({req.debian for req in missing})
        if not apt:
            say(f"install them with `apt-get install {' '.join(packages)}`, or run "
                "`rbridge install-worker --apt`")
            return 1
        if not _apt_install(packages, say):
            return 1
        missing = missing_requirements()
        if missing:
            say("install-worker: still missing: " + ", ".join(req.what for req in missing))
            return 1
    with tempfile.TemporaryDirectory(prefix="rbridge-install-") as tmp:
        # a copy: R CMD INSTALL builds in place, and the installed sources may be read-only
        build = Path(tmp) / "rserver"
        shutil.copytree(sources, build, ignore=shutil.ignore_patterns("*.o", "*.so"))
        command = ["R", "CMD", "INSTALL", "--preclean", "--no-docs"]
        if library is not None:
            Path(library).mkdir(parents=True, exist_ok=True)
            command.append(f"--library={library}")
        say(f"install-worker: building rserver {__version__} from {sources}")
        done = subprocess.run([*command, str(build)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            say(done.stdout[-3000:] + done.stderr[-3000:])
            say("install-worker: R CMD INSTALL failed (its output is above)")
            return 1
    where = f'lib.loc = "{library}"' if library else "lib.loc = NULL"
    installed = _r_says(f'cat(as.character(packageVersion("rserver", {where})))')
    if installed != __version__:
        say(f"install-worker: R reports rserver {installed}, not {__version__}")
        return 1
    say(f"install-worker: rserver {installed} installed" + (f" in {library}" if library else ""))
    if library:
        say(f"  the worker finds it when R_LIBS includes it: export R_LIBS={library}")
    say("  check everything with `rbridge doctor`")
    return 0
