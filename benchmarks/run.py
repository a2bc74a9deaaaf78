"""Runs every contender on every workload in one go and writes one table.

    python run.py [--quick] [--check] [--out results/latest.md]

Each contender runs in its own process (contenders/*.py) and reports samples;
this script computes medians with min and max, the ratios of rbridge against
the wire and the peers (from the same run), checks the targets the issues set,
and writes a markdown table and a PNG chart next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import WORKLOADS  # noqa: E402

CONTENDERS = [  # (column, script, args)
    ("rbridge ipc", "rbridge_bench.py", ["ipc"]),
    ("rbridge tcp", "rbridge_bench.py", ["tcp"]),
    ("rbridge server", "server_bench.py", []),
    ("wire ipc", "wire.py", ["ipc"]),
    ("wire tcp", "wire.py", ["tcp"]),
    ("pyRserve", "pyrserve_bench.py", []),
    ("rpy2", "rpy2_bench.py", []),
    ("pyarrow (no R)", "pyarrow_reference.py", []),
]

# (description, workload, numerator, denominator, limit): numerator/denominator <= limit
TARGETS = [
    ("small call ≤ 1.3× the wire (ipc)", "small_call", "rbridge ipc", "wire ipc", 1.3),
    ("small call ≤ 1.3× the wire (tcp)", "small_call", "rbridge tcp", "wire tcp", 1.3),
    ("small call ≤ 1.5× the wire, under CPU load (ipc)", "small_call_loaded", "rbridge ipc", "wire ipc", 1.5),
    ("small call ≤ 1.5× the wire, under CPU load (tcp)", "small_call_loaded", "rbridge tcp", "wire tcp", 1.5),
    ("small call faster than pyRserve", "small_call", "rbridge tcp", "pyRserve", 1.0),
    ("small call faster than pyRserve (ipc)", "small_call", "rbridge ipc", "pyRserve", 1.0),
    ("1e7 doubles R→Py ≤ 1.5× the wire (tcp)", "dbl_r2py", "rbridge tcp", "wire tcp", 1.5),
    ("1e7 doubles Py→R ≤ 1.5× the wire (tcp)", "dbl_py2r", "rbridge tcp", "wire tcp", 1.5),
    ("1e7 doubles R→Py ≤ 0.5× the wire, one host", "dbl_r2py", "rbridge ipc", "wire ipc", 0.5),
    ("1e7 doubles Py→R ≤ 0.5× the wire, one host", "dbl_py2r", "rbridge ipc", "wire ipc", 0.5),
    ("cold: first 1e7 doubles R→Py of a session ≤ 0.5× the wire's first, one host", "dbl_r2py_cold", "rbridge ipc",
     "wire ipc", 0.5),
    ("cold: first 1e7 doubles Py→R of a session ≤ 0.5× the wire's first, one host", "dbl_py2r_cold", "rbridge ipc",
     "wire ipc", 0.5),
    ("1e7 doubles R→Py ≥ 3× faster than pyRserve", "dbl_r2py", "rbridge ipc", "pyRserve", 1 / 3),
    ("1e7 doubles Py→R ≥ 3× faster than pyRserve", "dbl_py2r", "rbridge ipc", "pyRserve", 1 / 3),
    ("data.frame R→pandas ≥ 10× faster than pyRserve", "df_r2py", "rbridge ipc", "pyRserve", 0.1),
    ("data.frame pandas→R ≥ 10× faster than pyRserve", "df_py2r", "rbridge ipc", "pyRserve", 0.1),
    ("data.frame R→pandas ≥ 100× faster than rpy2", "df_r2py", "rbridge ipc", "rpy2", 0.01),
    ("data.frame pandas→R ≥ 100× faster than rpy2", "df_py2r", "rbridge ipc", "rpy2", 0.01),
    ("wide frame R→pandas ≤ 1.5× pyarrow's Table.to_pandas()", "wide_r2py", "rbridge ipc", "pyarrow (no R)", 1.5),
    ("wide frame pandas→R ≤ 1.5× pyarrow's Table.from_pandas()", "wide_py2r", "rbridge ipc", "pyarrow (no R)",
     1.5),
    ("callback ≤ 1.5× a small call", "callback_loop", "rbridge ipc", None, 1.5),
    ("%%R -i df (1e6 rows) ≥ 10× faster than rpy2's %%R -i df", "magic_df_input", "rbridge ipc", "rpy2", 0.1),
    ("server: small call with CURVE ≤ 2× the wire (tcp, no CURVE)", "small_call", "rbridge server", "wire tcp", 2.0),
    ("server: small call with CURVE faster than pyRserve", "small_call", "rbridge server", "pyRserve", 1.0),
]
# (description, numerator (contender, workload), denominator (contender, workload), limit)
CROSS_TARGETS = [
    ("cold, connect(shm_reserve=128 MiB): first 1e7 doubles R→Py ≤ 0.5× the wire's first, one host",
     ("rbridge ipc", "dbl_r2py_cold_reserved"), ("wire ipc", "dbl_r2py_cold"), 0.5),
    ("cold, connect(shm_reserve=128 MiB): first 1e7 doubles Py→R ≤ 0.5× the wire's first, one host",
     ("rbridge ipc", "dbl_py2r_cold_reserved"), ("wire ipc", "dbl_py2r_cold"), 0.5),
    ("server: 80 MB R→Py with CURVE ≤ 2× the wire without it (tcp)", ("rbridge server", "dbl_r2py_curve"),
     ("wire tcp", "dbl_r2py"), 2.0),
    ("server: 80 MB Py→R with CURVE ≤ 2× the wire without it (tcp)", ("rbridge server", "dbl_py2r_curve"),
     ("wire tcp", "dbl_py2r"), 2.0),
    ("server: a session starts faster than a cold `Rscript -e 1`", ("rbridge server", "session_start"),
     ("wire ipc", "cold_start"), 1.0),
]
# (description, numerator, denominator): ratios reported with no target
REPORTED = [
    ("a 1000x700 scatter PNG in Python / the same PNG in R alone (png, dev.off, readBin)", ("rbridge ipc", "plot_png"),
     ("rbridge ipc", "plot_png_in_r")),
    ("CURVE's own cost on the bare echo, small call (with / without)", ("wire tcp", "small_call_curve"),
     ("wire tcp", "small_call")),
    ("CURVE's own cost on the bare wire, 80 MB R→Py (with / without)", ("wire tcp", "dbl_r2py_curve"),
     ("wire tcp", "dbl_r2py")),
    ("CURVE's own cost on the bare wire, 80 MB Py→R (with / without)", ("wire tcp", "dbl_py2r_curve"),
     ("wire tcp", "dbl_py2r")),
    ("CURVE's own cost on the bare wire in rbridge's chunks, 80 MB R→Py (with / without)",
     ("wire tcp", "dbl_r2py_curve_chunks"), ("wire tcp", "dbl_r2py")),
    ("CURVE's own cost on the bare wire in rbridge's chunks, 80 MB Py→R (with / without)",
     ("wire tcp", "dbl_py2r_curve_chunks"), ("wire tcp", "dbl_py2r")),
    ("server with CURVE / bare wire with CURVE, 80 MB R→Py", ("rbridge server", "dbl_r2py_curve"),
     ("wire tcp", "dbl_r2py_curve")),
    ("server with CURVE / bare wire with CURVE, 80 MB Py→R", ("rbridge server", "dbl_py2r_curve"),
     ("wire tcp", "dbl_py2r_curve")),
    ("server without CURVE / bare wire, 80 MB R→Py (the relay's cost)", ("rbridge server", "dbl_r2py"),
     ("wire tcp", "dbl_r2py")),
    ("server without CURVE / bare wire, 80 MB Py→R (the relay's cost)", ("rbridge server", "dbl_py2r"),
     ("wire tcp", "dbl_py2r")),
]
# (description, workload, contender, limit): the value itself <= limit
ABSOLUTE_TARGETS = [
    ("small call ≤ 1.3× the echo, paired (ipc)", "small_call_paired", "rbridge ipc", 1.3),
    ("small call ≤ 1.3× the echo, paired (tcp)", "small_call_paired", "rbridge tcp", 1.3),
    ("small call ≤ 1.5× the echo under CPU load, paired (ipc)", "small_call_loaded_paired", "rbridge ipc", 1.5),
    ("small call ≤ 1.5× the echo under CPU load, paired (tcp)", "small_call_loaded_paired", "rbridge tcp", 1.5),
    ("an idle worker takes < 1% of a core (ipc)", "idle_cpu", "rbridge ipc", 1.0),
    ("an idle worker takes < 1% of a core (tcp)", "idle_cpu", "rbridge tcp", 1.0),
    ("server: small call with CURVE ≤ 2× the echo (tcp, no CURVE), paired", "small_call_paired", "rbridge server",
     2.0),
    ("server: a session starts in ≤ 50 ms (median)", "session_start", "rbridge server", 0.05),
    ("server: 50 idle sessions take < 1% of a core", "idle_cpu_sessions", "rbridge server", 1.0),
]


def run_contender(script: str, args: list[str], quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "contenders" / script), *args] + (["--quick"] if quick else [])
    # A temporary directory of its own, removed after: embedded R (rpy2) and
    # Rserve leave their session directories behind when their process ends.
    with tempfile.TemporaryDirectory(prefix="rbridge-bench-") as tmp:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=3600,
                              env=dict(os.environ, TMPDIR=tmp))
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {w: {"error": f"contender failed: {reason}"[:300]} for w in WORKLOADS}
    return json.loads(proc.stdout)


def settle(quick: bool) -> None:
    """Lets the machine settle between contenders: the kernel reclaims the
    gigabytes of memory a contender's bulk workloads freed, and a VM's
    background work on it slowed the next contender's small calls 3-fold."""
    if not quick:
        time.sleep(10)


def median(entry: dict[str, Any]) -> float | None:
    return statistics.median(entry["samples"]) if "samples" in entry else None


def fmt(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "%":
        return f"{value:.2f} % of a core"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "calls/s":
        return f"{value:,.0f} calls/s"
    for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale or suffix == "µs":
            return f"{value / scale:.3g} {suffix}"
    return str(value)


def cell(entry: dict[str, Any]) -> str:
    if "samples" not in entry:
        return "n/a" if "na" in entry else "error"
    s, unit = entry["samples"], entry["unit"]
    text = fmt(statistics.median(s), unit)
    if len(s) > 1:
        text += f" ({fmt(min(s), unit)}–{fmt(max(s), unit)})"
    return text


def machine() -> list[str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    mem = next((ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), "0")
    import numpy
    import zmq
    return [f"- {platform.platform()}, {os.cpu_count()} CPUs ({cpu}), {int(mem) // 1024 // 1024} GiB RAM",
            f"- Python {platform.python_version()}, NumPy {numpy.__version__}, pyzmq {zmq.__version__} "
            f"(libzmq {zmq.zmq_version()}), {out(['Rscript', '--version']) or out(['R', '--version'])}",
            f"- {out([sys.executable, '-m', 'pip', 'show', 'rpy2']).replace('Name: ', '')} "
            "3.5.17 and pyRserve 1.0.3 with Debian's Rserve"]


def write_chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [w for w in WORKLOADS if any(results[c][w].get("unit") == "s" for c, _, _ in CONTENDERS)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 4.2))
    for ax, workload in zip(axes, shown, strict=True):
        names = [c for c, _, _ in CONTENDERS if "samples" in results[c][workload]]
        values = [median(results[c][workload]) * 1e3 for c in names]
        ax.bar(range(len(names)), values, color=["#1f77b4" if c.startswith("rbridge") else
                                                 "#999999" if c.startswith("wire") else "#ff7f0e"
                                                 for c in names])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_title(workload, fontsize=9)
        ax.set_ylabel("ms (median, log scale)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke test)")
    parser.add_argument("--check", action="store_true", help="exit 1 if any workload failed to run")
    parser.add_argument("--out", default=None, help="markdown file (default results/latest.md)")
    opts = parser.parse_args()
    out = Path(opts.out) if opts.out else HERE / "results" / ("quick.md" if opts.quick else "latest.md")
    out.parent.mkdir(parents=True, exist_ok=True)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {}
    for column, script, args in CONTENDERS:
        print(f"running {column} ...", file=sys.stderr, flush=True)
        results[column] = run_contender(script, args, opts.quick)
        settle(opts.quick)

    lines = [f"# rbridge benchmarks ({'quick mode, ' if opts.quick else ''}{started})", "",
             "Medians with (min–max) over repeats; every figure comes from this one run.", "",
             "| workload | " + " | ".join(c for c, _, _ in CONTENDERS) + " |",
             "|---|" + "---|" * len(CONTENDERS)]
    for workload, what in WORKLOADS.items():
        cells = " | ".join(cell(results[c][workload]) for c, _, _ in CONTENDERS)
        lines.append(f"| {workload}: {what} | {cells} |")
    lines += ["", "Why a cell is n/a or an error:", ""]
    for c, _, _ in CONTENDERS:
        for workload in WORKLOADS:
            entry = results[c][workload]
            if "samples" not in entry:
                lines.append(f"- {c}, {workload}: {entry.get('na') or entry.get('error')}")
    lines += ["", "## Ratios and targets (time ratio: lower is better)", "",
              "| target | ratio | limit | verdict |", "|---|---|---|---|"]
    for desc, workload, num, den, limit in TARGETS:
        a = median(results[num][workload])
        b = median(results[num]["small_call"]) if den is None else median(results[den][workload])
        if a is None or b is None:
            lines.append(f"| {desc} | n/a | {limit:.3g}× | not measurable in this run |")
        else:
            verdict = "met" if a / b <= limit else "NOT met"
            lines.append(f"| {desc} | {a / b:.2f}× | {limit:.3g}× | {verdict} |")
    for desc, workload, contender, limit in ABSOLUTE_TARGETS:
        a = median(results[contender][workload])
        unit = results[contender][workload].get("unit", "")
        verdict = "not measurable in this run" if a is None else "met" if a <= limit else "NOT met"
        shown, bound = ((f"{a:.2f}×", f"{limit:.3g}×") if unit == "x" else
                        (fmt(a, unit) if a is not None else "", fmt(limit, unit)) if unit == "s" else
                        (f"{a:.2f} %", f"{limit:.3g} %"))
        lines.append(f"| {desc} | {'n/a' if a is None else shown} | {bound} | {verdict} |")
    for desc, (num, nw), (den, dw), *limit in CROSS_TARGETS + [(*r, None) for r in REPORTED]:
        a, b = median(results[num][nw]), median(results[den][dw])
        bound = limit[0]
        if a is None or b is None:
            lines.append(f"| {desc} | n/a | {'' if bound is None else f'{bound:.3g}×'} | not measurable in this run |")
        elif bound is None:
            lines.append(f"| {desc} | {a / b:.2f}× | (reported) | |")
        else:
            lines.append(f"| {desc} | {a / b:.2f}× | {bound:.3g}× | {'met' if a / b <= bound else 'NOT met'} |")
    lines += ["", "rbridge against each peer, same transport where there is one:", ""]
    for workload in WORKLOADS:
        parts = []
        for num, den in (("rbridge ipc", "wire ipc"), ("rbridge tcp", "wire tcp"), ("rbridge server", "wire tcp"),
                         ("rbridge tcp", "pyRserve"), ("rbridge ipc", "rpy2"),
                         ("rbridge ipc", "pyarrow (no R)")):
            a, b = median(results[num][workload]), median(results[den][workload])
            if a is not None and b is not None and b > 0:
                parts.append(f"{num} / {den} = {a / b:.2f}×")
        if parts:
            lines.append(f"- {workload}: " + "; ".join(parts))
    lines += ["", "## Machine", "", *machine(), "",
              "Reproduce: `make bench` (full) or `make bench-quick`. The peers live only in",
              "`benchmarks/.venv`. pyRserve 1.0.3 needs `numpy.string_`, `numpy.unicode_` and",
              "`numpy.compat.long` restored under NumPy 2 (see contenders/pyrserve_bench.py).", ""]
    out.write_text("\n".join(lines))
    (out.parent / (out.stem + ".json")).write_text(json.dumps(results, indent=1))
    write_chart(results, out.with_suffix(".png"))
    print("\n".join(lines))
    failed = [f"{c}/{w}" for c in results for w, e in results[c].items() if "error" in e]
    if opts.check and failed:
        print("failed workloads: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
