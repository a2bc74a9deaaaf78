"""Exception and warning types raised by rbridge."""

from __future__ import annotations


class RBridgeError(Exception):
    """Base class of every rbridge error."""


class WorkerNotAvailable(RBridgeError):
    """R or the ``rserver`` R package is missing, or the worker failed to start."""


class ServerBusy(WorkerNotAvailable):
    """The server admits no new session now: it has its maximum open
    (``--max-sessions``), or it is shutting down."""


class AuthenticationError(WorkerNotAvailable):
    """The CurveZMQ handshake failed: the server refused this client's key, the
    server key given is not the server's, or one side does not use CURVE."""


class WorkerDied(RBridgeError):
    """The R worker went away while a request was pending, or before it."""


class ProtocolError(RBridgeError):
    """A message broke the rbridge protocol (see ``protocol/SPEC.md``)."""


class RError(RBridgeError):
    """An R condition raised while evaluating a request.

    Attributes:
        rclass: the R class vector of the condition, e.g.
            ``["simpleError", "error", "condition"]``.
        message: the condition message.
        call: the deparsed call the condition names, or ``None``.
        traceback: deparsed calls from the outermost user frame inwards.
    """

    def __init__(self, rclass: list[str], message: str, call: str | None = None,
                 traceback: list[str] | None = None) -> None:
        self.rclass = list(rclass)
        self.message = message
        self.call = call
        self.traceback = list(traceback or [])
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" in {self.call}" if self.call else ""
        text = f"R error{where}: {self.message}"
        if self.traceback:
            text += "\nR traceback (outermost first):\n" + "\n".join(
                f"  {i + 1}: {frame}" for i, frame in enumerate(self.traceback))
        return text


class RInterrupted(RError):
    """The R computation was interrupted (``Session.interrupt()`` or Ctrl-C)."""


class RTimeout(RError, TimeoutError):
    """A request exceeded its timeout; R was interrupted."""


class RWarning(UserWarning):
    """An R warning, re-issued through Python's :mod:`warnings` machinery.

    Attributes:
        rclass: the R class vector of the warning condition.
        message: the warning message.
        call: the deparsed call the warning names, or ``None``.
    """

    def __init__(self, message: str, rclass: list[str] | None = None, call: str | None = None) -> None:
        super().__init__(message if call is None else f"In {call}: {message}")
        self.message = message
        self.rclass = list(rclass or ["simpleWarning", "warning", "condition"])
        self.call = call


def error_from_reply(info: dict) -> RError:
    """Builds the Python exception for an ``error`` reply's ``error`` field."""
    rclass = [str(c) for c in info.get("class") or ["error"]]
    args = (rclass, str(info.get("message") or ""), info.get("call"), info.get("traceback") or [])
    if "rbridge_timeout" in rclass:
        return RTimeout(*args)
    if "interrupt" in rclass:
        return RInterrupted(*args)
    return RError(*args)
