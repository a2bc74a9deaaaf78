"""The IPython extension: ``%load_ext bridge.ipython``.

``%R code`` evaluates one line of R and returns its value, converted;
``%%R`` runs a cell as R's console would: output and warnings stream into the
cell while R runs, each visible value is printed, plots are shown, and a data
frame that ends the cell shows as a table. The flags follow rpy2's magics:

- ``-i x,y`` assigns Python variables to R globals first, ``-o a,b`` brings R
  globals back into Python afterwards (both may repeat);
- ``-w``, ``-h`` (plot size), ``-u`` (their unit: ``px``, the default, ``in``,
  ``cm`` or ``mm``), ``-r`` (resolution in pixels per inch; 72 for a size in
  pixels, as R's ``png()``, else the plot default) for the plots of this run;
- ``-n``/``--noreturn``: ``%R`` returns nothing;
- ``-s``/``--session NAME``: the :class:`bridge.Session` in the Python
  variable ``NAME`` instead of the extension's own, which starts with the
  first magic.

An R error shows R's message and traceback, not Python's. R names complete
with Tab in ``%R`` lines.
"""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ._errors import RError
from ._plots import PlotSpec, default_spec
from ._session import Session, connect

#: Inches per unit of ``-u``.
UNITS = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4}


class RCellError(Exception):
    """An R error in a magic: IPython shows R's message and traceback."""

    def __init__(self, error: RError) -> None:
        super().__init__(error.message)
        self.error = error

    def _render_traceback_(self) -> list[str]:
        error = self.error
        lines = [f"Error in {error.call} : {error.message}" if error.call else f"Error: {error.message}"]
        if error.traceback:
            lines.append("Traceback (outermost first):")
            lines += [f"  {i}: {frame}" for i, frame in enumerate(error.traceback, 1)]
        return lines


#: The magics' options that take a value, and those that do not.
VALUE_FLAGS = frozenset({"-i", "--input", "-o", "--output", "-w", "--width", "-h", "--height", "-u", "--units",
                         "-r", "--res", "-s", "--session"})
SWITCHES = frozenset({"-n", "--noreturn"})


def split_options(line: str) -> tuple[str, str]:
    """The options at the start of a magic's line, and the R code after them,
    exactly as typed (splitting the whole line as arguments would lose the
    code's quoting and spacing)."""
    wants_value = False
    for token in re.finditer(r"\S+", line):
        word = token.group()
        if wants_value:
            wants_value = False
        elif word in VALUE_FLAGS:
            wants_value = True
        elif not (word in SWITCHES or (word.startswith("--") and word.split("=", 1)[0] in VALUE_FLAGS)
                  or re.fullmatch(r"-[iowhurs]\S+", word)):
            return line[:token.start()], line[token.start():]
    return line, ""


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for value in values or () for n in value.split(",") if n.strip()]


@magics_class
class RMagics(Magics):
    """``%R`` and ``%%R``; see the module's documentation."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._own: Session | None = None

    @property
    def session(self) -> Session:
        """The extension's own session (started on first use)."""
        if self._own is None or self._own.closed:
            self._own = connect()
        return self._own

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    def _session_named(self, name: str | None) -> Session:
        if name is None:
            return self.session
        value = self.shell.user_ns.get(name)
        if not isinstance(value, Session):
            raise UsageError(f"-s {name}: there is no bridge.Session in the Python variable {name!r}")
        return value

    @staticmethod
    def _plot_spec(args: Any) -> PlotSpec:
        """The plots' size and resolution from -w -h -u -r; the plot defaults
        (bridge.set_plot_defaults) for what is not given."""
        spec = default_spec()
        if args.units == "px":
            dpi = args.res or (72.0 if args.width or args.height else spec.dpi)
            scale = 1 / dpi
        else:
            dpi, scale = args.res or spec.dpi, UNITS[args.units]
        width = args.width * scale if args.width else spec.width
        height = args.height * scale if args.height else spec.height
        return PlotSpec(width, height, dpi, spec.format)

    @magic_arguments()
    @argument("-i", "--input", action="append", help="Python variables to assign in R first (names, comma-separated)")
    @argument("-o", "--output", action="append", help="R variables to bring back into Python afterwards")
    @argument("-w", "--width", type=float, help="width of plots, in --units")
    @argument("-h", "--height", type=float, help="height of plots, in --units")
    @argument("-u", "--units", choices=["px", "in", "cm", "mm"], default="px", help="unit of -w and -h")
    @argument("-r", "--res", type=float, help="resolution of plots, pixels per inch")
    @argument("-n", "--noreturn", action="store_true", help="%%R returns nothing")
    @argument("-s", "--session", help="the Python variable of a bridge.Session to use")
    @argument("code", nargs="*", help="R code (with %%%%R: the first line; the cell follows)")
    @line_cell_magic
    def R(self, line: str, cell: str | None = None) -> Any:  # noqa: N802 (the magic's name)
        """Runs R code; see ``bridge.ipython``."""
        options, line_code = split_options(line)
        args = parse_argstring(self.R, options)
        session = self._session_named(args.session)
        for name in _names(args.input):
            if name not in self.shell.user_ns:
                raise UsageError(f"-i {name}: there is no Python variable {name!r}")
            session.assign(name, self.shell.user_ns[name])
        code = line_code + ("\n" + cell if cell is not None else "")
        spec = self._plot_spec(args)
        result = None
        try:
            with session.plots(spec.width, spec.height, spec.dpi, spec.format, on_plot=display):
                if cell is None:   # the value is returned: IPython shows it (a plot object once, as PNG)
                    result = session.call("rserver:::line_eval", code)
                else:
                    shown = session.call("rserver:::cell_eval", code)
                    if shown is not None:
                        display({"text/html": shown["html"], "text/plain": shown["text"]}, raw=True)
        except RError as error:
            raise RCellError(error) from None
        for name in _names(args.output):
            self.shell.user_ns[name] = session.get(name)
        return None if (cell is not None or args.noreturn) else result


def complete_r(session: Session, code: str, symbol: str) -> list[str]:
    """R's own completions (utils' rcompgen) of ``code``, the R code before
    the cursor, as replacements of ``symbol``, the end of it that IPython
    replaces (R completes ``mtcars$m``; IPython replaces ``m``)."""
    try:
        found = session.with_options(timeout=5.0).call("rserver:::complete_code", code)
    except Exception:   # completion must never raise into IPython
        return []
    token = str(found["token"])
    if not token.endswith(symbol):
        return []
    cut = len(token) - len(symbol)
    return [str(c)[cut:] for c in found["completions"] or () if str(c).startswith(token)]


def load_ipython_extension(ipython: Any) -> None:
    """Registers ``%R``/``%%R`` and Tab completion of R names in ``%R`` lines."""
    magics = RMagics(ipython)
    ipython.register_magics(magics)

    def complete(_shell: Any, event: Any) -> list[str]:
        code = event.text_until_cursor.split("%R", 1)[-1].lstrip()
        return complete_r(magics.session, code, event.symbol)
    ipython.set_hook("complete_command", complete, str_key="%R")
    ipython._bridge_magics = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Closes the extension's own session."""
    magics = getattr(ipython, "_bridge_magics", None)
    if magics is not None:
        magics.close()
