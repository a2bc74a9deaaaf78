"""R code written in Python: expressions, symbols and formulas that are
spliced into the calls they are passed to (``protocol/SPEC.md``, ext 5)."""

from __future__ import annotations

import msgpack

from ._codec import EXT_CODE

_KINDS = {"expr": b"e", "sym": b"s", "formula": b"f"}


class RCode:
    """R source that R parses on the worker. As an argument of a call it is
    spliced into the call as code, so functions that evaluate their
    arguments in their own way (``dplyr::filter``, ``ggplot2::aes``, model
    formulas) see it as if it were written there. Anywhere else (assigned, or
    inside a list) it is the language object itself, as ``quote()`` gives it.
    Make one with :func:`bridge.expr`, :func:`bridge.sym` or :func:`bridge.formula`.
    """

    __slots__ = ("kind", "text")

    def __init__(self, kind: str, text: str) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
        if not isinstance(text, str):
            raise TypeError(f"R code must be a str, not {type(text).__name__}")
        if not text.strip():
            raise ValueError("R code must not be empty")
        if "\0" in text:
            raise ValueError("R code cannot contain NUL characters")
        if kind == "formula" and "~" not in text:
            raise ValueError(f"a formula needs a '~': {text!r}")
        self.kind = kind
        self.text = text

    def to_wire(self) -> msgpack.ExtType:
        return msgpack.ExtType(EXT_CODE, _KINDS[self.kind] + self.text.encode("utf-8"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RCode) and (other.kind, other.text) == (self.kind, self.text)

    def __hash__(self) -> int:
        return hash((self.kind, self.text))

    def __repr__(self) -> str:
        return f"bridge.{self.kind}({self.text!r})"


def expr(code: str) -> RCode:
    """An R expression, spliced into a call: ``dplyr.filter(df, bridge.expr("x > 2"))``."""
    return RCode("expr", code)


def sym(name: str) -> RCode:
    """An R symbol (a variable or column name), spliced into a call:
    ``ggplot2.aes(x=bridge.sym("wt"))``. Any string is a valid name."""
    return RCode("sym", name)


def formula(code: str) -> RCode:
    """An R formula, spliced into a call, so that it is made in the call's
    environment: ``survival.coxph(bridge.formula("Surv(time, status) ~ age"), data=df)``.
    (A string with ``~`` passed as a ``formula`` argument becomes one too.)"""
    return RCode("formula", code)
