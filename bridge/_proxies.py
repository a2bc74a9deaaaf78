"""Python proxies for things that stay in R: objects (handles), functions and
namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from ._errors import RBridgeError, RError


class Caller(Protocol):
    """What the proxies call R through (a :class:`bridge.Session`)."""

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any: ...

    def with_options(self, **options: Any) -> Caller: ...


class Owner(Protocol):
    """All a handle proxy needs of the connection that holds its object (the
    session's core provides it): a session to call R with, the release of
    handles, and the Arrow form of one."""

    @property
    def session(self) -> Caller: ...

    @property
    def closed(self) -> bool: ...

    def release(self, handle_id: int, now: bool) -> None: ...

    def arrow_of(self, handle_id: int) -> Any: ...

    def draw(self, obj: RObject) -> Any: ...


#: How long repr() waits for the worker before it shows the class alone.
REPR_TIMEOUT = 5.0


class RObject:
    """An R object that stays in the worker, referred to by a handle.

    - ``repr()`` is short: the class and size, then the first lines of R's
      print. ``str()`` (and so ``print()``) is R's whole ``print()`` output.
      Neither draws: a plot object prints to a null device.
    - ``obj["name"]`` is R's ``obj[["name"]]`` (``obj$name``; a slot of an S4
      object), ``obj[0]`` the first element (positions count from 0, as in
      Python; :meth:`rx2` takes R's positions). A missing name raises
      ``KeyError``, a position out of range ``IndexError``.
    - ``len(obj)`` is R's ``length(obj)``; ``+ - * / ** %`` and unary ``-``
      call R's operators, so ``plot + ggplot2.geom_point()`` works.
    - ``numpy.asarray(obj)`` converts it, or raises ``TypeError``.

    The handle is released (in a batch, with the session's next request) when
    the proxy is garbage-collected, or at once with :meth:`release`.
    """

    __slots__ = ("_core", "_id", "rclass", "__weakref__")

    def __init__(self, core: Owner, handle_id: int, rclass: list[str]) -> None:
        self._core = core
        self._id: int | None = handle_id
        #: The object's R class vector, as ``class(x)`` gives it.
        self.rclass: list[str] = rclass

    @property
    def handle_id(self) -> int | None:
        """The worker's id for this object (``None`` once released)."""
        return self._id

    def to_py(self) -> Any:
        """Converts the object as deeply as it can into plain Python values.

        data.frames become dicts of columns, factors and dates become strings,
        named vectors become dicts, matrices become lists of rows. Functions,
        environments and S4 objects cannot be converted (:class:`bridge.RError`).
        """
        return self._core.session.call("rserver:::plain", self)

    def to_arrow(self) -> Any:
        """The object as a lossless pyarrow object: a ``pyarrow.Table`` for a
        data.frame (and for named vectors and matrices, whose names and ``dim``
        are in the table's columns and schema metadata), a ``pyarrow.Array``
        for other vectors. Raises :class:`bridge.RError` for objects without
        an Arrow form (functions, environments, models...)."""
        if self._id is None:
            raise ValueError("this RObject was released")
        return self._core.arrow_of(self._id)

    def release(self) -> None:
        """Releases the R object now; the proxy is unusable afterwards."""
        if self._id is not None:
            self._core.release(self._id, now=True)
            self._id = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the R function this handle refers to."""
        return self._core.session.call(self, *args, **kwargs)

    def _describe(self, helper: str, timeout: float | None) -> str:
        cls = "/".join(self.rclass) or "?"
        if self._id is None:
            return f"<RObject {cls} (released)>"
        if self._core.closed:
            return f"<RObject {cls} (session closed)>"
        try:
            return str(self._core.session.with_options(timeout=timeout).call(helper, self))
        except RBridgeError as exc:
            return f"<RObject {cls} (cannot print: {exc})>"

    def __repr__(self) -> str:
        return self._describe("rserver:::repr_short", REPR_TIMEOUT)

    def _repr_html_(self) -> str | None:
        """Jupyter's view: a data frame's first rows as a table with its
        dimensions, R's print inside ``<pre>`` for anything else; bounded in
        size. None for plot objects, which show as images."""
        if self._id is None or self._core.closed or _draws(self.rclass):
            return None
        try:
            html = self._core.session.with_options(timeout=REPR_TIMEOUT).call("rserver:::html_of", self)
        except RBridgeError:
            return None
        return str(html) if html is not None else None

    def _repr_png_(self) -> Any:
        """A plot object (ggplot, lattice, recorded plot, grob) drawn as PNG
        at the defaults of :func:`bridge.set_plot_defaults`; None otherwise."""
        if self._id is None or self._core.closed or not _draws(self.rclass):
            return None
        try:
            return self._core.draw(self)
        except RBridgeError:
            return None

    def __str__(self) -> str:
        return self._describe("rserver:::repr_text", None)

    # -- R's element access, length and operators ---------------------------------
    def rx2(self, key: str | int) -> Any:
        """R's ``obj[[key]]``: by name, or by R's 1-based position."""
        try:
            return self._core.session.call("rserver:::element", self, key)
        except RError as exc:
            if "rbridge_key_error" in exc.rclass:
                raise KeyError(key) from None
            if "rbridge_index_error" in exc.rclass:
                raise IndexError(exc.message) from None
            raise

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(f"RObject keys are names (str) or positions (int), not {type(key).__name__}")
        if isinstance(key, int):
            key = key + 1 if key >= 0 else len(self) + key + 1
        return self.rx2(key)

    def __len__(self) -> int:
        return int(self._core.session.call("length", self))

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self.rx2(i + 1)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        value = self._core.session.call("identity", self)
        if isinstance(value, RObject):
            raise TypeError(f"an R object of class {'/'.join(self.rclass)} has no array form; "
                            "convert its parts (obj['name']) instead")
        return np.asarray(value, dtype=dtype)

    def _op(self, op: str, *operands: Any) -> Any:
        return self._core.session.call(op, *operands)

    def __add__(self, other: Any) -> Any:
        return self._op("+", self, other)

    def __radd__(self, other: Any) -> Any:
        return self._op("+", other, self)

    def __sub__(self, other: Any) -> Any:
        return self._op("-", self, other)

    def __rsub__(self, other: Any) -> Any:
        return self._op("-", other, self)

    def __mul__(self, other: Any) -> Any:
        return self._op("*", self, other)

    def __rmul__(self, other: Any) -> Any:
        return self._op("*", other, self)

    def __truediv__(self, other: Any) -> Any:
        return self._op("/", self, other)

    def __rtruediv__(self, other: Any) -> Any:
        return self._op("/", other, self)

    def __pow__(self, other: Any) -> Any:
        return self._op("^", self, other)

    def __rpow__(self, other: Any) -> Any:
        return self._op("^", other, self)

    def __mod__(self, other: Any) -> Any:
        return self._op("%%", self, other)

    def __rmod__(self, other: Any) -> Any:
        return self._op("%%", other, self)

    def __neg__(self) -> Any:
        return self._op("-", self)

    def __del__(self) -> None:
        hid = getattr(self, "_id", None)
        if hid is not None:
            try:
                self._core.release(hid, now=False)
            except Exception:    # never raise from a finalizer (e.g. at exit)
                pass


class RFunction:
    """An R function reached by name; calling it calls R."""

    __slots__ = ("_session", "name")

    def __init__(self, session: Caller, name: str) -> None:
        self._session = session
        self.name = name

    @property
    def session(self) -> Caller:
        """The session that calls it."""
        return self._session

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self.name, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<R function {self.name}>"


class Namespace:
    """An R package's exported functions as attributes (``Session.importr``).

    A name with ``_`` reaches the R name with ``.`` when the package exports
    the dotted name but not the underscored one (``stats.t_test``).
    """

    def __init__(self, session: Caller, package: str, exports: list[str]) -> None:
        self._session = session
        self._package = package
        self._exports = frozenset(exports)

    def __getattr__(self, name: str) -> RFunction:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._exports:
            dotted = name.replace("_", ".")
            if dotted in self._exports:
                name = dotted
            else:
                raise AttributeError(f"package '{self._package}' exports no function '{name}'")
        return RFunction(self._session, f"{self._package}::{name}")

    def __dir__(self) -> list[str]:
        return sorted(python_names(self._exports))

    def __repr__(self) -> str:
        return f"<R namespace {self._package}>"


#: R classes whose objects draw when printed (as R/proxies.R's GRAPHICS_CLASSES).
GRAPHICS_CLASSES = frozenset({"ggplot", "trellis", "grob", "gtable", "recordedplot"})


def _draws(rclass: list[str]) -> bool:
    return not GRAPHICS_CLASSES.isdisjoint(rclass)


def python_names(names: Any) -> set[str]:
    """R names as attribute names: as they are, and with ``.`` written ``_``."""
    out = set()
    for n in names:
        n = str(n)
        alias = n.replace(".", "_")
        out.update(x for x in (n, alias) if x.isidentifier())
    return out
