"""The protocol's rules, without I/O (``protocol/SPEC.md``).

A :class:`Protocol` builds the envelopes a client sends (ids, ``parent``,
``timeout``, the ``shm`` flag, queued releases, callback replies) and tells a
driver what each incoming message means, as a typed event. A :class:`Wait`
makes the liveness decisions for one request: when to ping, when the worker
counts as dead, when a timed-out request is given up. Nothing here touches a
socket, a thread or a clock of its own: drivers (the blocking one in
``_transport``; an asyncio one later) feed it bytes and times and act on what
it returns.
"""

from __future__ import annotations

import itertools
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from . import _codec
from ._errors import RTimeout, WorkerDied

#: Silence after which a waiting client pings the worker.
PING_AFTER = 1.0
#: Default seconds a worker may stay silent (no reply, pong or heartbeat)
#: before it is declared dead: long enough for a swap storm or a stopped
#: process to come back; a process that exits is noticed at once.
LIVENESS = 30.0
#: How long past its timeout a request waits for the worker's own timeout reply.
TIMEOUT_GRACE = 2.0

#: Decodes an ext value, given the message's payload frames.
ExtHook = Callable[[int, bytes, list[Any]], Any]


# -- events -----------------------------------------------------------------------

@dataclass
class Reply:
    """The final reply to the awaited request (result, error, pong, hello)."""

    message: dict[str, Any]


@dataclass
class Output:
    """Console output of the awaited request."""

    stream: str
    text: str | bytes


@dataclass
class Display:
    """A plot page R drew while the awaited request ran (SPEC §5b): its
    bytes, MIME type and size (pixels for PNG, points for SVG)."""

    mime: str
    data: bytes
    width: int
    height: int


@dataclass
class Callback:
    """R calls a Python function; the answer is :meth:`Protocol.callback_result`
    or :meth:`Protocol.callback_error`."""

    message: dict[str, Any]


@dataclass
class CallablesReleased:
    """R no longer holds these Python callables."""

    ids: list[int]


@dataclass
class Ignored:
    """A message nobody waits for: a reply to an abandoned request, output of
    one, or the worker's unasked pong."""

    message: dict[str, Any]


@dataclass(frozen=True)
class Warned:
    """A warning R signalled while it ran the awaited request (they come with
    its final reply)."""

    message: str
    rclass: list[str] | None
    call: str | None


Event = Reply | Output | Display | Warned | Callback | CallablesReleased | Ignored

#: What a :class:`Wait` tells its driver to do when nothing came.
PING = "ping"


class Protocol:
    """One client's protocol state: request ids, queued releases, the
    worker's process id (a pong from another one means a new worker)."""

    def __init__(self, ids: Iterable[int] | None = None) -> None:
        self._ids = iter(ids) if ids is not None else itertools.count(1)
        self.worker_pid: int | None = None
        self.pending_releases: deque[int] = deque()

    # -- building --------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def message(self, op: str, **fields: Any) -> dict[str, Any]:
        """An envelope with a fresh request id."""
        return self._envelope(op, fields)

    def _envelope(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {"v": _codec.PROTOCOL_VERSION, "id": next(self._ids), "op": op, **fields}

    def request(self, op: str, fields: dict[str, Any], *, timeout: float | None = None,
                parent: int | None = None, shm: bool = False,
                plots: dict[str, Any] | None = None) -> dict[str, Any]:
        """A request envelope with the common keys of SPEC §3."""
        msg = self._envelope(op, fields)
        if plots is not None:
            msg["plots"] = plots
        if shm:
            msg["shm"] = True
        if parent is not None:
            msg["parent"] = parent
        if timeout is not None:
            msg["timeout"] = float(timeout)
        return msg

    def hello(self, probe: tuple[str, bytes] | None, chunks: bool = False) -> dict[str, Any]:
        msg = self.message("hello", versions=[_codec.PROTOCOL_VERSION])
        if probe is not None:
            msg["shm_probe"] = {"name": probe[0], "token": probe[1]}
        if chunks:
            msg["chunks"] = True
        return msg

    def interrupt(self, target: int | None = None) -> dict[str, Any]:
        return self.message("interrupt") if target is None else self.message("interrupt", target=target)

    def queue_release(self, handle_id: int) -> None:
        self.pending_releases.append(handle_id)

    def take_releases(self) -> list[msgpack.ExtType]:
        """The queued releases as handle references, emptying the queue."""
        batch = []
        while self.pending_releases:
            batch.append(_codec.handle_ext(self.pending_releases.popleft()))
        return batch

    def release_message(self) -> dict[str, Any] | None:
        """One ``release`` for everything queued, or None."""
        return self.message("release", handles=self.take_releases()) if self.pending_releases else None

    @staticmethod
    def callback_result(callback_id: int, wire: dict[str, Any]) -> dict[str, Any]:
        """The reply to a callback: ``wire`` holds the value's wire form."""
        return {"v": _codec.PROTOCOL_VERSION, "id": callback_id, "op": "result", **wire}

    @staticmethod
    def callback_error(callback_id: int, exc: BaseException) -> dict[str, Any]:
        """The reply to a callback that raised: an R condition of class
        ``python_error`` carrying the Python type and traceback (SPEC §5a)."""
        return {"v": _codec.PROTOCOL_VERSION, "id": callback_id, "op": "error",
                "error": {"class": ["python_error", "error", "condition"],
                          "message": f"{type(exc).__name__}: {exc}", "call": None,
                          "traceback": traceback.format_exception(exc),
                          "python_type": f"{type(exc).__module__}.{type(exc).__qualname__}"}}

    # -- interpreting ----------------------------------------------------------------
    def interpret(self, msg: dict[str, Any], awaited: int) -> Event:
        """What a decoded message from the worker means to a client waiting
        for request ``awaited``. Raises WorkerDied when a pong shows that
        another process now serves the endpoint."""
        op = msg.get("op")
        if op == "ended":   # a server ended our session (SPEC §10)
            raise WorkerDied(f"the R session ended: {msg.get('reason') or 'no reason given'}")
        if op == "callback":
            return Callback(msg)
        if op == "release_callables":
            return CallablesReleased([int(c) for c in msg.get("callables") or ()])
        if msg.get("id") != awaited:
            if op == "pong" and self.worker_pid and msg.get("pid", self.worker_pid) != self.worker_pid:
                raise WorkerDied("the R worker was replaced by another process")
            return Ignored(msg)
        if op == "output":
            return Output(msg.get("stream", "stdout"), msg.get("text", ""))
        if op == "display":
            return Display(str(msg.get("mime", "")), bytes(msg.get("data") or b""),
                           int(msg.get("width") or 0), int(msg.get("height") or 0))
        return Reply(msg)

    @staticmethod
    def warnings_of(reply: dict[str, Any]) -> list[Warned]:
        """The warnings a final reply carries, as events."""
        return [Warned(str(w.get("message", "")), w.get("class"), w.get("call")) for w in reply.get("warnings") or ()]

    def receive(self, frame: Any, payloads: list[Any], ext_hook: ExtHook, awaited: int) -> Event:
        """Decodes an envelope (bytes or a buffer such as a zmq Frame;
        ``payloads``: the frames after it) and interprets it."""
        msg = _codec.unpack(frame, lambda code, data: ext_hook(code, data, payloads))
        return self.interpret(msg, awaited)

    def wait(self, request_id: int, now: float, timeout: float | None, liveness: float,
             ping_liveness: bool) -> Wait:
        return Wait(request_id, now, timeout, liveness, ping_liveness)


class Wait:
    """The liveness decisions while one request waits (SPEC §1 "Liveness")."""

    def __init__(self, request_id: int, now: float, timeout: float | None, liveness: float,
                 ping_liveness: bool) -> None:
        self.request_id = request_id
        self.timeout = timeout
        self.liveness = liveness
        self.ping_liveness = ping_liveness   # False where the worker's process is watched instead
        self.last_heard = now
        self.pinged_at: float | None = None
        self.give_up = None if timeout is None else now + timeout + TIMEOUT_GRACE

    def heard(self, now: float) -> None:
        """Something came from the worker."""
        self.last_heard = now
        self.pinged_at = None

    def idle(self, now: float) -> str | None:
        """Nothing came for a while: PING, or None; raises RTimeout when the
        worker did not answer a timed-out request, WorkerDied when it stayed
        silent for the liveness."""
        if self.give_up is not None and now > self.give_up:
            raise RTimeout(["rbridge_timeout", "interrupt", "condition"],
                           f"no reply within {self.timeout} s, and R did not respond to the interrupt")
        if not self.ping_liveness:
            return None
        if self.pinged_at is None and now - self.last_heard > PING_AFTER:
            self.pinged_at = now
            return PING
        if self.pinged_at is not None and now - self.pinged_at > self.liveness:
            raise WorkerDied(f"the R worker did not answer for {self.liveness:g} s (connect(liveness=...))")
        return None
