"""The client end of the wire: a DEALER socket, request ids and the wait for replies.

One :class:`Channel` carries one request at a time (callers serialize with its
lock). While a request waits, ``output`` messages are handed to a callback,
replies to earlier abandoned requests are dropped, and the worker's liveness is
checked: a local worker's process; for any worker, the connection (lost and
not back within RECONNECT_GRACE: dead) and pings answered by the worker's I/O
thread, which answers even while R computes (none for ``liveness`` seconds:
dead). A worker that pauses (SIGSTOP, swapping) for less than that is only
stalled: the call completes when it resumes.
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
#: Default seconds a worker may stay silent (no reply, pong or heartbeat)
#: before it is declared dead: long enough for a swap storm or a stopped
#: process to come back; a process that exits is noticed at once.
LIVENESS = 30.0
#: A lost connection that is not re-established within this many seconds
#: means the worker is gone (a worker that restarts has lost our state).
RECONNECT_GRACE = 1.5
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


def new_socket(context: zmq.Context, endpoint: str, routing_id: bytes, liveness: float) -> zmq.Socket:
    """A DEALER socket with the protocol's socket options, connected. The
    routing id stays the same across reconnections, so the worker keeps the
    client's state and routes replies to the new connection."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.RCVHWM, 0)     # never stall a burst of output messages
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(liveness * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TTL, int(liveness * 1000))
    sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
    sock.connect(endpoint)
    return sock


class Channel:
    """One socket to the worker, with request-id bookkeeping."""

    def __init__(self, context: zmq.Context, endpoint: str, ids: itertools.count,
                 is_alive: Callable[[], bool], ping_liveness: bool, *,
                 routing_id: bytes, liveness: float = LIVENESS) -> None:
        self.lock = threading.RLock()
        self.endpoint = endpoint
        self._sock = new_socket(context, endpoint, routing_id, liveness)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._down_since: float | None = None   # connection lost at, and not back
        self.liveness = liveness
        self.worker_pid: int | None = None      # from the handshake: a pong from another pid is a new worker
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
    def sockets(self) -> list[zmq.Socket]:
        """The channel's sockets (for a finalizer, which closes them)."""
        return [self._monitor, self._sock]

    def _connection_lost(self, now: float) -> bool:
        """Reads connection events: whether the connection has been down for
        longer than RECONNECT_GRACE."""
        while self._monitor.poll(0):
            frames = self._monitor.recv_multipart()
            event = int.from_bytes(frames[0][:2], "little")
            if event == zmq.EVENT_DISCONNECTED:
                self._down_since = self._down_since or now
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._down_since = None
        return self._down_since is not None and now - self._down_since > RECONNECT_GRACE

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
                if self._connection_lost(now):
                    raise WorkerDied(f"lost the connection to the R worker at {self.endpoint}") from None
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
                elif pinged_at is not None and now - pinged_at > self.liveness:
                    raise WorkerDied(f"the R worker at {self.endpoint} did not answer for "
                                     f"{self.liveness:g} s (connect(liveness=...))") from None
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
                if msg["op"] == "pong" and self.worker_pid and msg.get("pid", self.worker_pid) != self.worker_pid:
                    raise WorkerDied(f"the R worker at {self.endpoint} was replaced by another process")
                continue            # a pong, or the late reply to an abandoned request
            if msg["op"] == "output":
                if on_output is not None:
                    on_output(msg.get("stream", "stdout"), msg.get("text", ""))
                continue
            return msg

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
