"""The documentation runs: every Python code block of the README, in order, in
one namespace (as a reader would type them), with the output of ``pycon``
blocks checked by doctest; the package docstring; and every example script,
with the lines it prints checked."""

import doctest
import re
import subprocess
import sys

import pytest
from helpers import ROOT

import bridge

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(python|pycon)\n(.*?)^```", re.S | re.M)
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def readme_blocks() -> list[tuple[int, str, str]]:
    """(line, kind, code) of every Python block."""
    return [(README[:m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in BLOCK.finditer(README)]


def test_the_readme_has_python_blocks_of_both_kinds():
    kinds = [kind for _, kind, _ in readme_blocks()]
    assert kinds.count("pycon") >= 6 and "python" in kinds


def test_every_readme_code_block_runs_and_shows_what_it_claims():
    namespace: dict = {}
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=FLAGS)
    try:
        for line, kind, code in readme_blocks():
            if kind == "python":
                try:
                    exec(compile(code, f"README.md:{line}", "exec"), namespace)
                except Exception as exc:
                    pytest.fail(f"README.md block at line {line} raised {type(exc).__name__}: {exc}")
                continue
            test = parser.get_doctest(code, namespace, f"README.md:{line}", "README.md", line)
            result = runner.run(test, clear_globs=False)
            namespace.update(test.globs)   # DocTest copies its globals
            assert result.failed == 0, f"README.md block at line {line} does not show what it claims"
    finally:
        session = namespace.get("r")
        if isinstance(session, bridge.Session):
            session.close()


def test_the_package_docstring_example_runs():
    result = doctest.testmod(bridge, optionflags=FLAGS)
    assert result.attempted > 0 and result.failed == 0


EXAMPLES = {
    "quickstart.py": ["sum(1, 2) = 3", "mean(x, na.rm = TRUE) = 3.25", "mean([1, 2, 3]) = 2.0",
                      "coefficients: {'(Intercept)': 37.285, 'wt': -5.344}",
                      "intercept-only mean: 20.091", "caught: something went wrong",
                      "timed out, and the session still works: 42"],
    "packages.py": ["median survival by sex: {'sex=1': 270.0, 'sex=2': 426.0}",
                    "fixed effects: {'(Intercept)': 251.405, 'Days': 10.467}",
                    "plot written: True", "1961-01           445.6",
                    "an xts in pandas: DataFrame datetime64[us, UTC] ['xts', 'zoo']",
                    "12-month moving average, last: 476.17 pandas: 476.17",
                    "yearly means: [126.7, 139.7, 170.2]"],
    "server.py": ["alice sees x: True | bob sees x: False", "bob's session serves key: bob",
                  "alice's fit: {'(Intercept)': 37.285, 'wt': -5.344}", "sessions open: 2",
                  "without a key: AuthenticationError", "server exit status: 0"],
}


def test_every_example_is_listed_here():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_run_and_print_what_they_should(name):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for line in EXAMPLES[name]:
        assert line in done.stdout, f"{name} did not print {line!r}:\n{done.stdout}"
    assert not (ROOT / "Rplots.pdf").exists()
