"""Plots R draws during a request (SPEC §5b): their settings, the images, and
their inline display in Jupyter."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from os import PathLike
from typing import Any

#: The formats a worker draws in, and their MIME types.
PLOT_MIMES = {"png": "image/png", "svg": "image/svg+xml"}

#: Defaults for plots shown inline in Jupyter (:func:`set_plot_defaults`).
_defaults: dict[str, Any] = {"width": 7.0, "height": 5.0, "dpi": 144.0, "format": "png", "inline": True}


@dataclass(frozen=True)
class PlotSpec:
    """How a request's plots are drawn: size in inches, resolution, format."""

    width: float = 7.0
    height: float = 5.0
    dpi: float = 144.0
    format: str = "png"

    def __post_init__(self) -> None:
        if self.format not in PLOT_MIMES:
            raise ValueError(f"format must be one of {sorted(PLOT_MIMES)}, not {self.format!r}")
        for name in ("width", "height", "dpi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")

    def wire(self) -> dict[str, Any]:
        """The request's ``plots`` key."""
        return {"format": self.format, "width": float(self.width), "height": float(self.height),
                "dpi": float(self.dpi)}


class Plot:
    """One page R drew: ``data`` (the PNG or SVG bytes), ``mime``, and its size
    (``width``, ``height``: pixels for PNG, points for SVG). Jupyter shows it;
    :meth:`save` writes it to a file."""

    __slots__ = ("data", "mime", "width", "height", "dpi")

    def __init__(self, data: bytes, mime: str, width: int, height: int, dpi: float) -> None:
        self.data = data
        self.mime = mime
        self.width = width
        self.height = height
        self.dpi = dpi

    def save(self, path: str | PathLike[str]) -> None:
        """Writes the image, as drawn, to ``path``."""
        with open(path, "wb") as f:
            f.write(self.data)

    def _repr_png_(self) -> tuple[bytes, dict[str, int]] | None:
        if self.mime != PLOT_MIMES["png"]:
            return None
        # shown at 72 pixels per inch of the plot: a 144 dpi plot is sharp on a 2x screen
        return self.data, {"width": round(self.width * 72 / self.dpi), "height": round(self.height * 72 / self.dpi)}

    def _repr_svg_(self) -> str | None:
        return self.data.decode("utf-8") if self.mime == PLOT_MIMES["svg"] else None

    def __repr__(self) -> str:
        return f"<bridge.Plot {self.mime} {self.width}x{self.height}, {len(self.data)} bytes>"


class Plots(list):  # type: ignore[type-arg]
    """The plots collected by :meth:`bridge.Session.plots`, in the order drawn."""


def set_plot_defaults(width: float | None = None, height: float | None = None, dpi: float | None = None,
                      format: str | None = None, inline: bool | None = None) -> dict[str, Any]:
    """Sets how plots are drawn when they are shown inline in Jupyter (every
    call in a notebook captures what R draws, unless ``inline=False``).
    Returns the previous settings."""
    previous = dict(_defaults)
    given = {k: v for k, v in {"width": width, "height": height, "dpi": dpi, "format": format}.items()
             if v is not None}
    PlotSpec(**{**{k: _defaults[k] for k in ("width", "height", "dpi", "format")}, **given})   # checks them
    _defaults.update(given)
    if inline is not None:
        _defaults["inline"] = bool(inline)
    return previous


def default_spec(format: str | None = None) -> PlotSpec:
    """The plot defaults (:func:`set_plot_defaults`), in ``format`` if given."""
    return PlotSpec(_defaults["width"], _defaults["height"], _defaults["dpi"], format or _defaults["format"])


def inline_spec() -> PlotSpec | None:
    """The plot settings of a call made in a Jupyter kernel, or None elsewhere."""
    if not _defaults["inline"]:
        return None
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None   # type: ignore[attr-defined]
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return default_spec()


def show_inline(plot: Plot) -> None:
    """Displays a plot in the running Jupyter kernel."""
    from IPython.display import display
    display(plot)
