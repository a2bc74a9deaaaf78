"""Private local workers: an ``Rscript`` child serving on an ``ipc://`` socket in
a private 0700 directory, which also holds R's temporary directory. The worker
watches its parent and exits if the Python process dies; the directory and
process are removed on close, at interpreter exit, and (by the worker itself)
if this process is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from ._errors import WorkerNotAvailable
from ._payloads import sweep_segments

INSTALL_HINT = (
    "rbridge runs R in a separate worker process, which needs R and the R package "
    "'rserver'. Run `rbridge install-worker` (with `--apt` on Debian/Ubuntu to install "
    "R and the system libraries too), then `rbridge doctor` to check. To use a worker "
    "elsewhere, pass its endpoint: bridge.connect('tcp://host:port')."
)

SHUTDOWN_WAIT = 3.0
#: C stack for the worker, in KiB. Each level of R -> Python -> R nesting costs R
#: a few hundred KB of stack, so the usual 8 MiB allows only about 20 levels.
WORKER_STACK_KIB = 65536
# Raises the soft stack limit (left as it is if the hard limit is lower), then runs R.
STACK_WRAPPER = 'ulimit -s {kib} 2>/dev/null; exec "$0" "$@"'


class LocalWorker:
    """An R worker process owned by this Python process."""

    def __init__(self, rscript: str | None = None, env: dict[str, str] | None = None) -> None:
        wanted = rscript or os.environ.get("RBRIDGE_RSCRIPT") or "Rscript"
        exe = shutil.which(wanted)
        if not exe:
            raise WorkerNotAvailable(f"{wanted} was not found (or is not executable). " + INSTALL_HINT)
        self.directory = Path(tempfile.mkdtemp(prefix="rbridge-"))   # mode 0700
        self.endpoint = f"ipc://{self.directory / 'worker.sock'}"
        self.log_path = self.directory / "worker.log"
        child_env = dict(os.environ)
        # R's tempdir() inside the private directory, so that it goes with the
        # directory even when the worker is killed (R removes it only at exit)
        child_env["TMPDIR"] = str(self.directory)
        child_env.update(env or {})
        child_env.update({
            "RBRIDGE_ENDPOINT": self.endpoint,
            "RBRIDGE_PARENT_PID": str(os.getpid()),
            "RBRIDGE_OWNED_DIR": str(self.directory),
            "LANG": child_env.get("LANG") or "C.UTF-8",
        })
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    ["/bin/sh", "-c", STACK_WRAPPER.format(kib=WORKER_STACK_KIB),
                     exe, "-e", "rserver::serve(quiet = TRUE)"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env,
                    start_new_session=True,   # a terminal's Ctrl-C reaches R only as a message
                )
            except OSError as exc:
                shutil.rmtree(self.directory, ignore_errors=True)
                raise WorkerNotAvailable(f"cannot start {exe}: {exc}. " + INSTALL_HINT) from exc
        self.pid = self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def startup_failure(self) -> WorkerNotAvailable:
        """The error to raise when the worker exited before answering."""
        log = self.log_text()
        if "there is no package called" in log and "rserver" in log:
            return WorkerNotAvailable("The R package 'rserver' is not installed. " + INSTALL_HINT)
        return WorkerNotAvailable(
            f"the R worker exited with status {self.process.poll()} before it answered.\n"
            f"Its output:\n{log.strip()[-2000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def abandon(self) -> None:
        """Stops the worker without waiting (from a finalizer): SIGTERM, the
        private directory removed at once, the process reaped in the background."""
        if self.is_alive():
            self.process.terminate()
        shutil.rmtree(self.directory, ignore_errors=True)
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        try:
            self.process.wait(SHUTDOWN_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        sweep_segments(self.pid)

    def stop(self, wait: float = SHUTDOWN_WAIT) -> None:
        """Waits for the process to exit (after a shutdown request), then
        kills it if needed, and removes the private directory."""
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
        sweep_segments(self.pid)   # shared-memory payloads it made and nobody read
