"""The client end of the wire: a DEALER socket, request ids and the wait for replies.

One :class:`Channel` carries one request at a time (callers serialize with its
lock). While a request waits, ``output`` messages are handed to a callback,
replies to earlier abandoned requests are dropped, and the worker's liveness is
checked: a local worker's process, and for any worker, pings answered by the
worker's I/O thread (which answers even while R computes).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from . import _codec
from ._errors import RTimeout, WorkerDied
from ._payloads import ZERO_COPY_MIN

HEARTBEAT_MS = 1000
#: Silence after which a waiting client pings the worker.
PING_AFTER = 1.0
#: A worker that stays silent this long after a ping is declared dead.
DEAD_AFTER = 3.0
#: How long past its timeout a request waits for the worker's own timeout reply.
TIMEOUT_GRACE = 2.0
POLL_MS = 100

OutputSink = Callable[[str, Any], None]
#: Decodes an ext value given the message's payload frames.
ExtHook = Callable[[int, bytes, list[Any]], Any]


def _plain_ext_hook(code: int, data: bytes, frames: list[Any]) -> Any:
    return _codec._ext_hook(code, data)


def _with_frames(hook: ExtHook, frames: list[Any], code: int, data: bytes) -> Any:
    return hook(code, data, frames)


def new_socket(context: zmq.Context, endpoint: str) -> zmq.Socket:
    """A DEALER socket with the protocol's socket options, connected."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)     # never stall a burst of output messages
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * HEARTBEAT_MS)
    sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
    sock.connect(endpoint)
    return sock


class Channel:
    """One socket to the worker, with request-id bookkeeping."""

    def __init__(self, context: zmq.Context, endpoint: str, ids: itertools.count,
                 is_alive: Callable[[], bool], ping_liveness: bool) -> None:
        self.lock = threading.RLock()
        self.endpoint = endpoint
        self._sock = new_socket(context, endpoint)
        self._ids = ids
        self._is_alive = is_alive
        self._ping_liveness = ping_liveness   # False where is_alive is authoritative
        self._ext_hook: ExtHook = _plain_ext_hook
        #: Called with the worker's messages that are not replies: "callback"
        #: (R calls a Python function; answered from the waiting thread) and
        #: "release_callables".
        self.on_worker_message: Callable[[dict[str, Any]], None] | None = None
        self.closed = False

    @property
    def socket(self) -> zmq.Socket:
        return self._sock

    def set_ext_hook(self, hook: ExtHook) -> None:
        self._ext_hook = hook

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, message: dict[str, Any], frames: Sequence[Any] = ()) -> None:
        """Sends without waiting; the reply, if any, is dropped when it comes.
        ``frames`` (payloads) follow the envelope; large ones are not copied."""
        envelope = _codec.pack(message)
        if not frames:
            self._sock.send(envelope)
            return
        self._sock.send(envelope, zmq.SNDMORE)
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            self._sock.send(frame, zmq.SNDMORE if i < last else 0, copy=len(frame) < ZERO_COPY_MIN)

    def request(self, message: dict[str, Any], *, frames: Sequence[Any] = (), timeout: float | None = None,
                on_output: OutputSink | None = None,
                on_interrupt: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Sends ``message`` (which has ``id``) and returns its final reply."""
        rid = message["id"]
        self.send(message, frames)
        try:
            return self._wait(rid, timeout, on_output)
        except KeyboardInterrupt:
            # Ctrl-C: stop the R computation too, and keep the session in step.
            if on_interrupt is not None:
                on_interrupt(rid)
            try:
                self._wait(rid, TIMEOUT_GRACE, None)
            except (RTimeout, WorkerDied, KeyboardInterrupt):
                pass
            raise

    def _wait(self, rid: int, timeout: float | None, on_output: OutputSink | None) -> dict[str, Any]:
        start = last_heard = time.monotonic()
        pinged_at: float | None = None
        give_up = None if timeout is None else start + timeout + TIMEOUT_GRACE
        while True:
            try:
                frame = self._sock.recv()
            except zmq.Again:
                now = time.monotonic()
                if not self._is_alive():
                    raise WorkerDied(f"the R worker at {self.endpoint} exited") from None
                if give_up is not None and now > give_up:
                    raise RTimeout(
                        ["rbridge_timeout", "interrupt", "condition"],
                        f"no reply within {timeout} s, and R did not respond to the interrupt",
                    ) from None
                if not self._ping_liveness:
                    continue
                if pinged_at is None and now - last_heard > PING_AFTER:
                    self.send({"v": _codec.PROTOCOL_VERSION, "id": self.next_id(), "op": "ping"})
                    pinged_at = now
                elif pinged_at is not None and now - pinged_at > DEAD_AFTER:
                    raise WorkerDied(f"the R worker at {self.endpoint} stopped answering") from None
                continue
            last_heard = time.monotonic()
            pinged_at = None
            payloads: list[Any] = []     # received without copying, read in place
            while self._sock.getsockopt(zmq.RCVMORE):
                payloads.append(self._sock.recv(copy=False))
            msg = _codec.unpack(frame, functools.partial(_with_frames, self._ext_hook, payloads))
            if msg["op"] in ("callback", "release_callables") and self.on_worker_message is not None:
                self.on_worker_message(msg)
                continue
            if msg.get("id") != rid:
                continue            # a pong, or the late reply to an abandoned request
            if msg["op"] == "output":
                if on_output is not None:
                    on_output(msg.get("stream", "stdout"), msg.get("text", ""))
                continue
            return msg

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close(linger=0)
