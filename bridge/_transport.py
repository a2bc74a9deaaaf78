"""The blocking driver of the protocol: a DEALER socket per channel.

One :class:`Channel` carries one request at a time (callers serialize with its
lock). It sends what :class:`~bridge._protocol.Protocol` builds, feeds it what
arrives and acts on the events it returns: output goes to a callback,
callbacks and released callables to the session, stale messages are dropped.
While a request waits, the worker's liveness is checked: a local worker's
process; for any worker, the connection (lost and not back within
RECONNECT_GRACE: dead); and the protocol's own decisions (pings, liveness,
timeouts; see ``_protocol.Wait``). A worker that pauses (SIGSTOP, swapping)
for less than the liveness is only stalled: the call completes when it resumes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from . import _codec
from ._errors import AuthenticationError, RTimeout, WorkerDied
from ._keys import CurveKeys
from ._payloads import ZERO_COPY_MIN
from ._protocol import (
    LIVENESS,
    PING,
    TIMEOUT_GRACE,
    Event,
    ExtHook,
    Ignored,
    Protocol,
    Reply,
)

HEARTBEAT_MS = 1000
#: Seconds a CURVE handshake may take before the keys are taken to be wrong.
HANDSHAKE_WAIT = 2.0
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: A lost connection that is not re-established within this many seconds
#: means the worker is gone (a worker that restarts has lost our state).
RECONNECT_GRACE = 1.5
#: A server's session (SPEC §10): the front answers ZMTP heartbeats even while
#: the session's R is stalled, so a silent connection is a partition, noticed
#: within ~2.7 s: (heartbeat interval, timeout) in ms, and the reconnect grace.
SESSION_HEARTBEAT = (700, 1200)
SESSION_RECONNECT_GRACE = 0.8
POLL_MS = 100



def _plain_ext_hook(code: int, data: bytes, frames: list[Any]) -> Any:
    return _codec._ext_hook(code, data)


def new_socket(context: zmq.Context, endpoint: str, routing_id: bytes, liveness: float,
               keys: CurveKeys | None = None, heartbeat: tuple[int, int] | None = None) -> zmq.Socket:
    """A DEALER socket with the protocol's socket options, connected. The
    routing id stays the same across reconnections, so the worker keeps the
    client's state and routes replies to the new connection."""
    sock = context.socket(zmq.DEALER)
    if keys is not None:
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = keys.client_public
        sock.curve_secretkey = keys.client_secret
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.RCVHWM, 0)     # never stall a burst of output messages
    _set_heartbeat(sock, heartbeat or (HEARTBEAT_MS, int(liveness * 1000)))
    sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
    sock.connect(endpoint)
    return sock


def _set_heartbeat(sock: zmq.Socket, heartbeat: tuple[int, int]) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat[0])
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat[1])
    sock.setsockopt(zmq.HEARTBEAT_TTL, heartbeat[1])


class Channel:
    """One socket to the worker, with request-id bookkeeping."""

    def __init__(self, context: zmq.Context, endpoint: str, protocol: Protocol,
                 is_alive: Callable[[], bool], ping_liveness: bool, *,
                 routing_id: bytes, liveness: float = LIVENESS, keys: CurveKeys | None = None,
                 session: bool = False) -> None:
        self.lock = threading.RLock()
        self.endpoint = endpoint
        self.protocol = protocol
        self._sock = new_socket(context, endpoint, routing_id, liveness, keys, SESSION_HEARTBEAT if session else None)
        self._reconnect_grace = SESSION_RECONNECT_GRACE if session else RECONNECT_GRACE
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
                                                      | zmq.EVENT_HANDSHAKE_SUCCEEDED | HANDSHAKE_FAILED)
        self._down_since: float | None = None   # connection lost at, and not back
        # With CURVE, a handshake must succeed within HANDSHAKE_WAIT of the
        # TCP connection (a wrong server key gets no answer at all).
        self._curve = keys is not None
        self._handshaken = False
        self._connected_at: float | None = None
        self._refused: str | None = None    # why a handshake failed
        self.liveness = liveness
        self._is_alive = is_alive
        self._ping_liveness = ping_liveness   # False where is_alive is authoritative
        self._ext_hook: ExtHook = _plain_ext_hook
        #: Called with the events that are not about the awaited request:
        #: Callback (R calls a Python function; answered from the waiting
        #: thread) and CallablesReleased.
        self.on_event: Callable[[Event], None] | None = None
        self.sent: Counter[str] = Counter()   # messages sent, by op
        self._pack = _codec.packer()   # used under self.lock, as the socket is
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
            if event == zmq.EVENT_CONNECTED:
                self._connected_at = self._connected_at or now
            elif event == zmq.EVENT_DISCONNECTED:
                self._down_since = self._down_since or now
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._down_since = None
                self._handshaken = True
            elif event & HANDSHAKE_FAILED:
                value = int.from_bytes(frames[0][2:6], "little")
                self._refused = ("the server refused this client's key" if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                 else f"the security handshake failed (event {event:#x}, code {value}): one side "
                                 "uses CURVE and the other does not, or the keys do not match")
        if self._refused is not None:
            raise AuthenticationError(f"{self._refused} ({self.endpoint})")
        if (self._curve and not self._handshaken and self._connected_at is not None
                and now > self._connected_at + HANDSHAKE_WAIT):
            raise AuthenticationError(f"no CURVE handshake with {self.endpoint} within {HANDSHAKE_WAIT:g} s: "
                                      "server_key is not this server's key, or the server refused ours")
        return self._down_since is not None and now - self._down_since > self._reconnect_grace

    def become_session(self) -> None:
        """The peer is a server's session: a silent connection is a partition
        (SESSION_HEARTBEAT). The socket reconnects with those heartbeats (the
        server hands our routing id over to the new connection)."""
        _set_heartbeat(self._sock, SESSION_HEARTBEAT)
        self._reconnect_grace = SESSION_RECONNECT_GRACE
        self._sock.disconnect(self.endpoint)
        self._sock.connect(self.endpoint)

    def set_ext_hook(self, hook: ExtHook) -> None:
        self._ext_hook = hook

    def next_id(self) -> int:
        return self.protocol.next_id()

    def send(self, message: dict[str, Any], frames: Sequence[Any] = ()) -> None:
        """Sends without waiting; the reply, if any, is dropped when it comes.
        ``frames`` (payloads) follow the envelope; large ones are not copied."""
        envelope = self._pack(message)
        self.sent[message["op"]] += 1
        if not frames:
            self._sock.send(envelope)
            return
        self._sock.send(envelope, zmq.SNDMORE)
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            self._sock.send(frame, zmq.SNDMORE if i < last else 0, copy=len(frame) < ZERO_COPY_MIN)

    def request(self, message: dict[str, Any], *, frames: Sequence[Any] = (), timeout: float | None = None,
                on_interrupt: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Sends ``message`` (which has ``id``) and returns its final reply."""
        request_id = message["id"]
        self.send(message, frames)
        try:
            return self._wait(request_id, timeout)
        except KeyboardInterrupt:
            # Ctrl-C: stop the R computation too, and keep the session in step.
            if on_interrupt is not None:
                on_interrupt(request_id)
            try:
                self._wait(request_id, TIMEOUT_GRACE)
            except (RTimeout, WorkerDied, KeyboardInterrupt):
                pass
            raise

    def _wait(self, request_id: int, timeout: float | None) -> dict[str, Any]:
        # A small call's reply usually comes before the first poll interval
        # ends: the liveness bookkeeping (Wait) starts only when one has passed.
        sock = self._sock
        started = heard = time.monotonic()
        wait = None
        while True:
            try:
                # as a Frame: its `more` is far cheaper than getsockopt(RCVMORE)
                frame = sock.recv(copy=False)
            except zmq.Again:
                now = time.monotonic()
                if wait is None:
                    wait = self.protocol.wait(request_id, started, timeout, self.liveness, self._ping_liveness)
                    wait.heard(heard)
                if not self._is_alive():
                    raise WorkerDied(f"the R worker at {self.endpoint} exited") from None
                if self._connection_lost(now):
                    raise WorkerDied(f"lost the connection to the R worker at {self.endpoint}") from None
                if wait.idle(now) == PING:
                    self.send(self.protocol.message("ping"))
                continue
            payloads: list[Any] = []     # received without copying, read in place
            more = frame.more
            while more:
                part = sock.recv(copy=False)
                payloads.append(part)
                more = part.more
            event = self.protocol.receive(frame, payloads, self._ext_hook, request_id)
            if isinstance(event, Reply):
                return event.message
            heard = time.monotonic()
            if wait is not None:
                wait.heard(heard)
            if not isinstance(event, Ignored) and self.on_event is not None:
                self.on_event(event)   # output, callbacks, released callables

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
