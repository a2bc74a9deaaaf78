"""R errors, warnings and output as a Python user sees them."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import warnings

import numpy as np
import pytest
from helpers import run_in_threads

import bridge


def test_r_error_carries_class_message_call_and_traceback(r):
    r.eval("f <- function() stop('boom'); g <- function() f()")
    with pytest.raises(bridge.RError) as info:
        r.g()
    err = info.value
    assert err.rclass == ["simpleError", "error", "condition"]
    assert err.message == "boom"
    assert err.call == "f()"
    assert err.traceback == ["g()", "f()", 'stop("boom")']
    assert "boom" in str(err) and "g()" in str(err)


def test_custom_condition_classes_arrive(r):
    with pytest.raises(bridge.RError) as info:
        r.eval("stop(structure(class = c('my_error', 'error', 'condition'), "
               "list(message = 'custom', call = NULL)))")
    assert info.value.rclass[0] == "my_error"
    assert info.value.call is None


def test_parse_errors_are_r_errors(r):
    with pytest.raises(bridge.RError, match="unexpected"):
        r.eval("1 +* 2")


def test_session_keeps_working_after_errors(r):
    for _ in range(3):
        with pytest.raises(bridge.RError):
            r.eval("stop('again')")
    assert r.sum(1, 2) == 3


def test_warnings_become_python_warnings(r):
    with pytest.warns(bridge.RWarning, match="NaNs produced") as record:
        value = r.log(-1.0)
    assert value != value   # NaN: the call still returns its value
    w = record[0].message
    assert isinstance(w, bridge.RWarning) and isinstance(w, Warning)
    assert w.rclass == ["simpleWarning", "warning", "condition"]
    assert w.call == "log(-1)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r.eval("warning('first'); warning('second'); 1")
    assert [str(c.message.message) for c in caught] == ["first", "second"]


def test_output_goes_to_python_stdout_and_stderr(r, capsys):
    r.eval("cat('to stdout\\n'); message('to stderr'); print(1:3)")
    out, err = capsys.readouterr()
    assert out == "to stdout\n[1] 1 2 3\n"
    assert err == "to stderr\n"


def test_output_can_be_captured(r):
    with r.capture_output() as captured:
        r.eval("cat('a\\n'); message('b'); invisible(NULL)")
    assert captured.stdout == "a\n" and captured.stderr == "b\n"


def test_captures_nest_and_warnings_still_reach_the_caller(r, capsys):
    with r.capture_output() as outer:
        r.eval("cat('outer\n')")
        with r.capture_output() as inner, pytest.warns(bridge.RWarning, match="careful"):
            r.eval("cat('inner\n'); warning('careful'); message('note'); invisible(NULL)")
        r.eval("cat('outer again\n')")
    r.eval("cat('uncaptured\n')")
    assert (inner.stdout, inner.stderr) == ("inner\n", "note\n")
    assert (outer.stdout, outer.stderr) == ("outer\nouter again\n", "")
    assert capsys.readouterr().out == "uncaptured\n"


def test_output_streams_while_the_call_runs():
    arrivals: list[tuple[float, str]] = []

    class Clock(io.StringIO):
        def write(self, text):
            arrivals.append((time.monotonic(), text))
            return len(text)

    with bridge.connect(stdout=Clock()) as r:
        start = time.monotonic()
        r.eval("cat('early\\n'); Sys.sleep(1.5); cat('late\\n')")
        end = time.monotonic()
    assert [t for _, t in arrivals] == ["early\n", "late\n"]
    assert arrivals[0][0] - start < 1.0 and end - arrivals[0][0] > 1.0


@pytest.mark.skipif(shutil.which("R") is None, reason="needs R to build a test library")
def test_output_from_compiled_code(r, tmp_path, capsys):
    src = tmp_path / "noisy.c"
    src.write_text('#include <R_ext/Print.h>\n'
                   'void noisy(void) { Rprintf("from Rprintf %d\\n", 42); REprintf("from REprintf\\n"); }\n')
    subprocess.run(["R", "CMD", "SHLIB", str(src)], cwd=tmp_path, check=True, capture_output=True)
    r.call("dyn.load", str(tmp_path / "noisy.so"))
    r.eval("invisible(.C('noisy'))")
    out, err = capsys.readouterr()
    assert out == "from Rprintf 42\n" and err == "from REprintf\n"


def test_large_and_unicode_output_is_intact(r):
    with r.capture_output() as captured:
        r.eval("for (i in 1:2000) cat(i, '\u00e9\u4e16', '\\n'); cat(strrep('x', 20000))")
    lines = captured.stdout.split("\n")
    assert lines[:2000] == [f"{i} \u00e9\u4e16 " for i in range(1, 2001)]
    assert lines[2000] == "x" * 20000


def test_threads_sharing_a_session_each_get_their_own_results(r):
    def work(tag: int) -> None:
        for k in range(50):
            assert r.paste(f"t{tag}", k) == f"t{tag} {k}"

    assert run_in_threads(work, 8) == []


class Timed(io.TextIOBase):
    """A sink that records when each piece of text arrived."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.pieces: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.pieces.append((time.monotonic() - self.start, text))
        return len(text)


@pytest.mark.parametrize("code", [
    "cat('.'); Sys.sleep(1.5)",                                              # no newline, no flush
    "cat('.'); flush.console(); t <- Sys.time(); while (Sys.time() - t < 1.5) NULL",   # flush, then busy
    "cat('\\r 50%'); Sys.sleep(1.5)",                                        # a progress line
    "pb <- txtProgressBar(max = 2, style = 3); setTxtProgressBar(pb, 1); Sys.sleep(1.5); close(pb)",
])
def test_output_without_a_newline_arrives_while_r_is_still_busy(code):
    sink = Timed()
    with bridge.connect(stdout=sink) as r:
        sink.start = time.monotonic()
        r.eval(code)
        total = time.monotonic() - sink.start
    first = sink.pieces[0][0]
    assert total > 1.0 and first < total - 0.8, sink.pieces    # well before the call ended


def test_warnings_point_at_the_line_that_made_the_call(r):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r.log(-1); line = __import__("inspect").currentframe().f_lineno   # noqa: E702
        stats = r.importr("stats")
        stats.sd(np.array(["a", "b"]))
    assert caught[0].filename == __file__ and caught[0].lineno == line
    assert all(w.filename == __file__ for w in caught)


def test_tracebacks_show_user_frames_one_line_each(r):
    r.eval("deep <- function(n) if (n == 0) stop('bottom') else deep(n - 1)")
    with pytest.raises(bridge.RError) as info:
        r.call("deep", 2)
    assert info.value.traceback == ["deep(2L)", "deep(n - 1)", "deep(n - 1)", 'stop("bottom")']
    with pytest.raises(bridge.RError) as info:
        r.eval("(function(...) stop('long'))(" + ", ".join(f"c{i} = {i}" for i in range(60)) + ")")
    assert all("\n" not in frame and len(frame) <= 120 for frame in info.value.traceback)
    with pytest.raises(bridge.RError) as info:
        r.importr("noSuchPackageAnywhere")
    assert info.value.traceback == [] and "rserver" not in str(info.value)
