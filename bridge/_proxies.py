"""Python proxies for things that stay in R: objects (handles), functions and
namespaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _codec
from ._errors import RBridgeError

if TYPE_CHECKING:
    from ._session import Session, _Core


class RObject:
    """An R object that stays in the worker, referred to by a handle.

    ``repr()`` and ``str()`` show R's own ``print()`` output. The handle is
    released (in a batch, with the session's next request) when the proxy is
    garbage-collected, or at once with :meth:`release`.
    """

    __slots__ = ("_core", "_id", "rclass", "__weakref__")

    def __init__(self, core: _Core, handle_id: int, rclass: list[str]) -> None:
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
        return self._core.session.with_options(results="arrow")._request(
            "call", fn="identity", args=[_codec.handle_ext(self._id)], kwargs={}, mode="arrow")

    def release(self) -> None:
        """Releases the R object now; the proxy is unusable afterwards."""
        if self._id is not None:
            self._core.release(self._id, now=True)
            self._id = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the R function this handle refers to."""
        return self._core.session.call(self, *args, **kwargs)

    def _text(self) -> str:
        cls = "/".join(self.rclass) or "?"
        if self._id is None:
            return f"<RObject of class {cls} (released)>"
        if self._core.closed:
            return f"<RObject of class {cls} (session closed)>"
        try:
            return str(self._core.session.call("rserver:::repr_text", self))
        except RBridgeError as exc:
            return f"<RObject of class {cls} (cannot print: {exc})>"

    __repr__ = _text
    __str__ = _text

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

    def __init__(self, session: Session, name: str) -> None:
        self._session = session
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self.name, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<R function {self.name}>"


class Namespace:
    """An R package's exported functions as attributes (``Session.importr``).

    A name with ``_`` reaches the R name with ``.`` when the package exports
    the dotted name but not the underscored one (``stats.t_test``).
    """

    def __init__(self, session: Session, package: str, exports: list[str]) -> None:
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


def python_names(names: Any) -> set[str]:
    """R names as attribute names: as they are, and with ``.`` written ``_``."""
    out = set()
    for n in names:
        n = str(n)
        alias = n.replace(".", "_")
        out.update(x for x in (n, alias) if x.isidentifier())
    return out
