"""rbridge: use R from Python, out of process.

>>> import bridge
>>> with bridge.connect() as r:
...     r.sum(1, 2)
3
"""

from ._arrow import TimeSeries, ts
from ._code import RCode, expr, formula, sym
from ._codec import PROTOCOL_VERSION
from ._errors import (
                      AuthenticationError,
                      ProtocolError,
                      RBridgeError,
                      RError,
                      RInterrupted,
                      RTimeout,
                      RWarning,
                      ServerBusy,
                      WorkerDied,
                      WorkerNotAvailable,
)
from ._plots import Plot, Plots, set_plot_defaults
from ._proxies import Namespace, RFunction, RObject
from ._session import CapturedOutput, Diagnostics, Session, connect

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AuthenticationError",
    "CapturedOutput",
    "Diagnostics",
    "Namespace",
    "Plot",
    "Plots",
    "ProtocolError",
    "RBridgeError",
    "RCode",
    "RError",
    "RFunction",
    "RInterrupted",
    "RObject",
    "RTimeout",
    "RWarning",
    "ServerBusy",
    "TimeSeries",
    "Session",
    "WorkerDied",
    "WorkerNotAvailable",
    "connect",
    "expr",
    "formula",
    "set_plot_defaults",
    "sym",
    "ts",
]
