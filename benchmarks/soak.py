"""Soak and reliability figures (make soak; a small run in make test).

- A soak of small calls, handle round trips and interrupted requests against
  one private worker, with the worker's and the client's RSS, file
  descriptors, threads, live handles and /dev/shm entries at start and end:
  they must be flat.
- Time from a real death to WorkerDied, for each transport.
- Time from a client's death (in `repeat {}`) to its worker being idle.
- Other clients' small-call latency while one client floods 10,000 requests a
  second and reads nothing, against the same calls without the flood.

Usage: python soak.py [--scale 0.01] [--out results/soak.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

import bridge

HERE = Path(__file__).resolve().parent


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return {"rss_mb": round(rss, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def shm_entries() -> int:
    return sum(name.startswith("rbridge-") for name in os.listdir("/dev/shm"))


def snapshot(r: bridge.Session) -> dict[str, float]:
    # Thread.join() returns just before the OS thread is gone: let the
    # interrupt timer's thread finish exiting before threads are counted.
    time.sleep(0.2)
    worker = {f"worker {k}": v for k, v in proc_stats(r.info["pid"]).items()}
    client = {f"client {k}": v for k, v in proc_stats(os.getpid()).items()}
    return {**worker, **client, "live handles": r.live_handles(), "/dev/shm entries": shm_entries()}


def interrupted_request(r: bridge.Session, rng: random.Random) -> None:
    timer = threading.Timer(rng.uniform(0.0, 0.03), r.interrupt)
    timer.start()
    try:
        r.eval("Sys.sleep(0.05); 1")
    except bridge.RInterrupted:
        pass
    timer.join()


def soak(scale: float) -> tuple[list[str], bool]:
    calls, handles, interrupts = int(200_000 * scale), int(50_000 * scale), int(1_000 * scale)
    rng = random.Random(1)
    lines = []
    with bridge.connect() as r:
        for i in range(2_000):              # warm up: R's heap grows to its working size
            r.sum(1, 1)
            if i % 10 == 0:
                r.call("is.environment", r.eval("new.env()"))
        interrupted_request(r, rng)         # (its second socket, for interrupts)
        start = snapshot(r)
        t0 = time.monotonic()
        for i in range(calls):
            if r.sum(i, 1) != i + 1:
                raise AssertionError(f"wrong value at call {i}")
        t_calls = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(handles):
            h = r.eval("new.env()")
            if r.call("is.environment", h) is not True:
                raise AssertionError("a handle did not round-trip")
            del h
        t_handles = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(interrupts):
            interrupted_request(r, rng)
            if r.sum(2, 2) != 4:
                raise AssertionError("wrong value after an interrupt")
        t_interrupts = time.monotonic() - t0
        end = snapshot(r)
    lines.append(f"Soak: {calls:,} small calls ({t_calls:.1f} s), {handles:,} handle round trips "
                 f"({t_handles:.1f} s), {interrupts:,} interrupted requests ({t_interrupts:.1f} s), "
                 "one private worker.\n")
    lines.append("| resource | start | end |")
    lines.append("|---|---|---|")
    flat = True
    for key in start:
        lines.append(f"| {key} | {start[key]} | {end[key]} |")
        if key.endswith("rss_mb"):
            flat &= end[key] - start[key] < 20       # flat: allocator noise, not growth per call
        else:
            flat &= end[key] <= start[key]           # a count that went down leaked nothing
    lines.append(f"\nFlat: {'yes' if flat else 'NO'}.\n")
    return lines, flat


def start_tcp_worker(*env: tuple[str, str]) -> tuple[str, subprocess.Popen]:
    """A serve() worker on a free loopback port, with its log and R's
    tempdir() in this run's temporary directory (killed workers cannot remove
    theirs)."""
    log = Path(tempfile.gettempdir(), f"rbridge-soak-{time.monotonic_ns()}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([shutil.which("Rscript"), "-e", 'rserver::serve("tcp://127.0.0.1:*")'],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={**os.environ, "TMPDIR": tempfile.gettempdir(), **dict(env)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on (tcp://\S+)", log.read_text())
        if found:
            log.unlink()
            return found.group(1), proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("worker did not start")


def time_to_worker_died(transport: str) -> float:
    proc = None
    if transport == "ipc (private worker)":
        r = bridge.connect()
        victim = r.info["pid"]
    else:
        endpoint, proc = start_tcp_worker()
        r = bridge.connect(endpoint)
        victim = proc.pid
    killed: list[float] = []

    def kill() -> None:
        killed.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)

    threading.Timer(0.3, kill).start()
    try:
        r.eval("Sys.sleep(60)")
        raise AssertionError("the call returned")
    except bridge.WorkerDied:
        took = time.monotonic() - killed[0]
    r.close()
    if proc is not None:
        proc.wait()
    return took


def time_to_idle_after_client_death() -> float:
    endpoint, proc = start_tcp_worker()
    try:
        with bridge.connect(endpoint) as other:
            victim = subprocess.Popen([sys.executable, "-c",
                                       f"import bridge; r = bridge.connect({endpoint!r}); r.eval('repeat {{}}')"])
            while other.ping()["state"] != "busy":
                time.sleep(0.02)
            victim.kill()
            victim.wait()
            killed = time.monotonic()
            while other.ping()["state"] != "idle":
                if time.monotonic() - killed > 30:
                    raise AssertionError("the worker stayed busy")
                time.sleep(0.01)
            return time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()


def flood(endpoint: str, stop: threading.Event, rate: int = 10_000) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(endpoint)
    start, sent = time.monotonic(), 0
    while not stop.is_set():
        sent += 1
        with contextlib.suppress(zmq.Again):
            sock.send(msgpack.packb({"v": 1, "id": sent, "op": "eval", "code": "runif(100)"}), zmq.NOBLOCK)
        ahead = start + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    sock.close()
    ctx.term()
    return sent


def latencies(r: bridge.Session, seconds: float) -> np.ndarray:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        r.sum(1, 2)
        out.append(time.perf_counter() - t0)
        time.sleep(0.002)
    return np.array(out) * 1000


def flood_latency(seconds: float) -> tuple[np.ndarray, np.ndarray, float]:
    endpoint, proc = start_tcp_worker()
    try:
        with bridge.connect(endpoint) as other:
            quiet = latencies(other, seconds)
            stop = threading.Event()
            sent: list[int] = []
            flooding = threading.Thread(target=lambda: sent.append(flood(endpoint, stop)))
            flooding.start()
            time.sleep(0.3)
            loud = latencies(other, seconds)
            stop.set()
            flooding.join()
            return quiet, loud, sent[0] / (seconds + 0.3)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full soak's counts")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak.md")
    args = ap.parse_args()

    lines, flat = soak(args.scale)
    lines.append("| from | to | median | max | runs |")
    lines.append("|---|---|---|---|---|")
    for transport in ("ipc (private worker)", "tcp"):
        runs = [time_to_worker_died(transport) for _ in range(args.repeats)]
        lines.append(f"| worker killed (SIGKILL), {transport} | `WorkerDied` | {np.median(runs):.2f} s | "
                     f"{max(runs):.2f} s | {len(runs)} |")
    runs = [time_to_idle_after_client_death() for _ in range(args.repeats)]
    lines.append(f"| client killed in `repeat {{}}` (tcp) | worker idle | {np.median(runs):.2f} s | "
                 f"{max(runs):.2f} s | {len(runs)} |")
    quiet, loud, rate = flood_latency(max(2.0, 6.0 * args.scale ** 0.5))
    lines.append("")
    lines.append(f"Another client's `sum(1, 2)` over tcp while one client floods {rate:,.0f} requests/s "
                 "and reads nothing:\n")
    lines.append("| | p50 | p99 | max | calls |")
    lines.append("|---|---|---|---|---|")
    for name, lat in (("without the flood", quiet), ("during the flood", loud)):
        lines.append(f"| {name} | {np.percentile(lat, 50):.2f} ms | {np.percentile(lat, 99):.2f} ms | "
                     f"{lat.max():.1f} ms | {len(lat)} |")
    p99 = float(np.percentile(loud, 99))
    lines.append(f"\np99 during the flood: {p99:.1f} ms (target: under 100 ms).")
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    if not flat:
        sys.exit("the soak was not flat")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="rbridge-soak-") as run_tmp:
        tempfile.tempdir = run_tmp
        main()
