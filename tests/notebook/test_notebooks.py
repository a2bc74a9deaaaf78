"""Real notebooks through a real Jupyter kernel (nbclient + ipykernel): what
the saved notebook holds after %R/%%R cells, inline plots and rich displays."""

from __future__ import annotations

import base64
import re
import struct
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(*cells: str, allow_errors: bool = False) -> list:
    """Executes the cells in a fresh kernel; returns each cell's outputs."""
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=allow_errors).execute()
    return [cell.outputs for cell in nb.cells]


def pngs(outputs: list) -> list[tuple[int, int]]:
    """The pixel sizes of the PNG displays among a cell's outputs."""
    sizes = []
    for out in outputs:
        data = out.get("data", {}).get("image/png")
        if data:
            raw = base64.b64decode(data)
            assert raw[:8] == b"\x89PNG\r\n\x1a\n"
            sizes.append(struct.unpack(">II", raw[16:24]))
    return sizes


def text_of(outputs: list, name: str = "stdout") -> str:
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == name)


def test_magics_in_a_real_notebook():
    load, ggplot, stream, table, error, back, line, other, isolated, unknown, line_plot, assigned = run(
        "%load_ext bridge.ipython\nimport pandas as pd\ndf = pd.DataFrame({'x': [1.0, 2.0, 3.0], 'g': list('aab')})",
        "%%R -w 6 -h 4 -u in -r 100\nlibrary(ggplot2)\nggplot(mtcars, aes(wt, mpg)) + geom_point()",
        "%%R\ncat('first\\n'); Sys.sleep(0.2); message('to stderr'); print(1:3); warning('careful')",
        "%%R -i df\ndf$y <- df$x * 2\ndf",
        "%%R\nf <- function() stop('bad thing')\nf()",
        "%R -o y y <- sum(df$x)\nprint(y)",
        "%R -n mean(df$x)\n%R mean(df$x)",
        "import bridge\nother = bridge.connect()\n%R -s other z <- 41\n%R -s other -o z z + 1\nprint(z)",
        "%R exists('z')",
        "%R -s nothing 1",
        "%R -w 300 -h 200 library(ggplot2); ggplot(mtcars, aes(wt, mpg)) + geom_point()",
        "%R -n p <- ggplot(mtcars, aes(wt, mpg)) + geom_point()",
        allow_errors=True)
    assert not any(o.output_type == "error" for o in load + ggplot + stream + table + back + line)
    assert pngs(ggplot) == [(600, 400)]
    assert text_of(stream) == "first\n[1] 1 2 3\n"
    assert text_of(stream, "stderr") == "to stderr\nWarning: careful\n"   # in order, as they happened
    html = [o.data["text/html"] for o in table if "text/html" in o.get("data", {})]
    assert len(html) == 1 and "<table" in html[0] and "3 rows x 3 columns" in html[0] and "<td>4</td>" in html[0]
    [err] = [o for o in error if o.output_type == "error"]
    assert err.ename == "RCellError" and err.evalue == "bad thing"
    assert err.traceback[0] == "Error in f() : bad thing" and any("f()" in t for t in err.traceback[1:])
    assert not any("bridge" in t or ".py" in t for t in err.traceback)   # R's traceback, not Python's
    assert text_of(back) == "6.0\n"
    [result] = [o for o in line if o.output_type == "execute_result"]
    assert result.data["text/plain"] == "2.0"
    assert text_of(other) == "41.0\n"                                      # -o z: after the cell
    [result] = [o for o in isolated if o.output_type == "execute_result"]
    assert result.data["text/plain"] == "False"                           # z is in the other session only
    assert "UsageError: -s nothing: there is no bridge.Session" in text_of(unknown, "stderr")   # IPython's way
    assert len(pngs(line_plot)) == 1                 # %R returns the ggplot; IPython shows it once
    assert pngs(assigned) == [] and assigned == []    # -n: nothing returned, nothing drawn


def test_plots_of_any_call_show_inline_and_objects_display_richly():
    plot, frame, model, gg = run(
        "import bridge\nbridge.set_plot_defaults(width=5, height=3, dpi=100)\nr = bridge.connect()\n"
        "r.eval('plot(1:10); plot(10:1)')",
        "r.with_options(convert=False).eval('iris')",
        "r.with_options(convert=False).eval('lm(Sepal.Length ~ Species, iris)')",
        "r.with_options(convert=False).eval('library(ggplot2); "
        "ggplot(iris, aes(Sepal.Length)) + geom_histogram(bins = 10)')")
    assert pngs(plot) == [(500, 300), (500, 300)]
    [table] = [o for o in frame if o.output_type == "execute_result"]
    assert "150 rows x 5 columns, first 10 rows" in table.data["text/html"]
    assert table.data["text/html"].count("<tr>") == 12            # header, types, 10 rows
    [printed] = [o for o in model if o.output_type == "execute_result"]
    assert printed.data["text/html"].startswith("<pre>") and "Coefficients" in printed.data["text/html"]
    [shown] = [o for o in gg if o.output_type == "execute_result"]
    assert pngs([shown]) == [(500, 300)] and shown.metadata["image/png"] == {"width": 360, "height": 216}


def test_output_streams_into_the_cell_while_r_runs_and_r_names_complete():
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext bridge.ipython\n%R 1", timeout=60)
        msg_id = kc.execute("%%R\ncat('early\\n'); Sys.sleep(1.5); cat('late\\n')")
        arrivals = {}
        while True:
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                for word in ("early", "late"):
                    if word in msg["content"]["text"]:
                        arrivals[word] = time.monotonic()
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert arrivals["late"] - arrivals["early"] > 1.0     # "early" came while R slept
        code = "%R mtcars$m"
        reply = kc.complete(code, len(code), reply=True, timeout=30)["content"]
        assert reply["status"] == "ok"
        assert "mpg" in reply["matches"] and code[reply["cursor_start"]:reply["cursor_end"]] == "m"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.timeout(600)
def test_the_tutorial_notebook_runs_and_its_committed_output_shows_the_plots():
    path = EXAMPLES / "tutorial.ipynb"
    committed = nbformat.read(path, as_version=4)
    assert any(pngs(c.get("outputs", [])) for c in committed.cells if c.cell_type == "code")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(o.output_type == "error" for o in outputs)
    assert len(pngs(outputs)) >= 2
    assert any("<table" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert "coef" in "".join(o.get("text", "") + str(o.get("data", {})) for o in outputs).lower()


def test_the_readmes_notebook_blocks_run_in_a_real_kernel():
    blocks = re.findall(r"^```ipython\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert len(blocks) >= 2
    outputs = run(*blocks)
    assert not any(o.output_type == "error" for cell in outputs for o in cell)
    assert pngs(outputs[1]) == [(600, 400)]


@pytest.mark.parametrize("line, options, code", [
    ('-i df -w 600 paste("a  b", \'-w\')', "-i df -w 600 ", 'paste("a  b", \'-w\')'),
    ("-n --width=5 -u in x <- -1", "-n --width=5 -u in ", "x <- -1"),
    ("-w600 -ix,y  sum(x)", "-w600 -ix,y  ", "sum(x)"),
    ("-o total", "-o total", ""),
    ("-1 + 2", "", "-1 + 2"),
])
def test_a_magics_r_code_is_kept_as_typed(line, options, code):
    from bridge.ipython import split_options
    assert split_options(line) == (options, code)
