"""Sessions: the user-facing API over one R worker."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import secrets
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import zmq

from . import _codec
from ._arena import RESERVE_MAX, ArenaReader, ArenaWriter
from ._arrow import DTYPE_BACKENDS, Payload, convert_payloads
from ._convert import scalars_wire, to_wire
from ._errors import (
    AuthenticationError,
    ProtocolError,
    RBridgeError,
    RTimeout,
    RWarning,
    ServerBusy,
    WorkerDied,
    WorkerNotAvailable,
    error_from_reply,
)
from ._keys import CurveKeys, curve_keys
from ._payloads import (
    EXT_PAYLOAD,
    PayloadWriter,
    create_segment,
    make_probe,
    open_segment,
    read_payload,
    sweep_segments,
    unlink_segment,
)
from ._plots import Plot, Plots, PlotSpec, default_spec, inline_spec, show_inline
from ._protocol import LIVENESS, CallablesReleased, Callback, Display, Event, Output, Protocol, Warned
from ._proxies import Namespace, RFunction, RObject, python_names
from ._transport import Channel
from ._worker import LocalWorker

#: Per-call options and their defaults (see Session.with_options).
DEFAULT_OPTIONS: dict[str, Any] = {"timeout": None, "convert": True, "results": "pandas", "dtype_backend": "numpy"}
RESULT_TYPES = ("pandas", "arrow")
#: The requests that run R code, and so may draw (SPEC §5b).
PLOTTING_OPS = ("eval", "call", "get")
SHUTDOWN_REPLY_WAIT = 2.0
CLIENT_KEY_BYTES = 16
FRAMES_PER_LEVEL = 40


@dataclass(frozen=True)
class Diagnostics:
    """A snapshot of what a session holds, from :meth:`Session.diagnostics`:
    for leak tests and troubleshooting."""

    #: the worker's process id (on its host)
    worker_pid: int | None
    #: a private worker's own directory (socket, log), else None
    worker_directory: str | None
    #: Python callables that R code holds (released when R collects them)
    callables: int
    #: messages this session sent on its main socket, by op
    messages_sent: dict[str, int]
    #: shared-memory arenas this session writes payloads into
    arenas: int
    #: regions of those arenas the worker has not given back yet
    regions_out: int
    #: the worker's arenas this session has mapped, by segment name
    worker_arenas_mapped: tuple[str, ...]
    #: bytes of shared memory reserved ahead for payloads (``connect(shm_reserve=)``):
    #: by this session, and by the worker for this session's results
    shm_reserved: int
    worker_shm_reserved: int


class CapturedOutput:
    """What R printed inside :meth:`Session.capture_output`."""

    def __init__(self) -> None:
        self._stdout = io.StringIO()
        self._stderr = io.StringIO()

    @property
    def stdout(self) -> str:
        return self._stdout.getvalue()

    @property
    def stderr(self) -> str:
        return self._stderr.getvalue()


class _Core:
    """State shared by a session and its option views: the worker, the
    channels, pending handle releases and output sinks."""

    def __init__(self, endpoint: str, worker: LocalWorker | None,
                 stdout: IO[str] | None, stderr: IO[str] | None, liveness: float = LIVENESS,
                 keys: CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.worker = worker
        self.liveness = liveness
        self.keys = keys
        self.chunks = keys is not None   # large frame payloads in chunks (SPEC "Arrow payloads")
        self.info: dict[str, Any] = {}   # the worker's, from the handshake
        self.context = zmq.Context()
        self.protocol = Protocol()   # one id sequence for every socket of the session
        # The client key: every socket of this session has routing id key + its
        # number, so the worker knows them as one client (SPEC "Clients").
        self.client_key = bytes([secrets.randbelow(255) + 1]) + secrets.token_bytes(CLIENT_KEY_BYTES - 1)
        self.channel = self._new_channel(0)
        # every socket of this session, for the finalizer (which must not hold the core)
        self.sockets: list[zmq.Socket] = list(self.channel.sockets)
        self.channel.set_ext_hook(self._ext_hook)
        self._control: Channel | None = None
        self._control_lock = threading.Lock()
        self.live_ids: set[int] = set()
        # Python callables R holds, by id; an entry goes when R releases it.
        self.callables: dict[int, Callable[..., Any]] = {}
        self.callable_ids = itertools.count(1)
        self.callbacks_running: list[int] = []     # ids of callbacks being served
        self.callback_errors: list[BaseException] = []
        self.channel.on_event = self._on_event
        self.sinks: dict[str, IO[str] | None] = {"stdout": stdout, "stderr": stderr}
        # Output and warnings go through emit(): the innermost listener that
        # takes an event (capture_output's), else where they go by default.
        self.listeners: list[Callable[[Output | Warned | Display], bool]] = []
        self.plot_specs: list[PlotSpec] = []   # of the open Session.plots() blocks
        self.closed = False
        self.dead = False
        self.options: dict[str, Any] = dict(DEFAULT_OPTIONS)   # the session's own (set by connect())
        self.shm = False          # the worker reads and writes shared-memory payloads
        self.arena_writer: ArenaWriter | None = None   # our arenas, when shm
        self.arena_reader = ArenaReader(open_segment)   # the worker's, mapped
        self.worker_reserved = 0  # bytes the worker reserved ahead for our results
        self.sent_segments: list[str] = []   # from callback replies, unlinked after the request
        self.finalizer: weakref.finalize | None = None

    def _new_channel(self, number: int) -> Channel:
        return Channel(self.context, self.endpoint, self.protocol, self.is_alive, self.worker is None,
                       routing_id=self.client_key + bytes([number]), liveness=self.liveness, keys=self.keys,
                       session=bool(self.info.get("session")))

    @property
    def session(self) -> Session:
        """A session with the connection's own options (no reference kept:
        a session and its core must not form a cycle)."""
        return Session(self, self.options)

    # -- liveness and wire hooks ------------------------------------------------
    def is_alive(self) -> bool:
        return self.worker is None or self.worker.is_alive()

    def _ext_hook(self, code: int, data: bytes, frames: list[Any]) -> Any:
        if code == EXT_PAYLOAD:
            return Payload(read_payload(data, frames, self.arena_reader))
        value = _codec._ext_hook(code, data)
        if isinstance(value, _codec.HandleRef):
            self.live_ids.add(value.id)
            return RObject(self, value.id, value.rclass)
        return value

    def handle_id(self, value: Any) -> int | None:
        if not isinstance(value, RObject):
            return None
        if value._core is not self:
            raise ValueError("this RObject belongs to another session")
        if value._id is None:
            raise ValueError("this RObject was released")
        return value._id

    def reference(self, value: Any) -> Any:
        """The wire form of values bound to this session (see _convert.to_wire)."""
        hid = self.handle_id(value)
        if hid is not None:
            return _codec.handle_ext(hid)
        if isinstance(value, RFunction):
            if getattr(value.session, "_core", None) is not self:
                raise ValueError("this R function belongs to another session")
            return value.name          # R finds the function by name (match.fun)
        if callable(value) and not isinstance(value, type):
            cid = next(self.callable_ids)
            self.callables[cid] = value
            return _codec.callable_ext(cid)
        return None

    # -- callbacks --------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, (Output, Display)):
            self.emit(event)
        elif isinstance(event, CallablesReleased):
            for cid in event.ids:
                self.callables.pop(cid, None)
        elif isinstance(event, Callback):
            self._run_callback(event.message)

    def _run_callback(self, msg: dict[str, Any]) -> None:
        """Runs a Python function R called, in the thread waiting for the outer
        request, and answers with its result or its exception."""
        fn = self.callables.get(msg.get("fn"))
        self.callbacks_running.append(msg["id"])
        # Each level of R <-> Python nesting costs Python a few dozen frames; R
        # bounds the nesting, so lift Python's limit to what that bound needs
        # (hitting it between receiving a callback and answering would hang R).
        needed = 1000 + FRAMES_PER_LEVEL * len(self.callbacks_running)
        if sys.getrecursionlimit() < needed:
            sys.setrecursionlimit(needed)
        payloads: PayloadWriter | None = None
        try:
            if fn is None:
                raise RBridgeError(f"Python function {msg.get('fn')} is no longer registered")
            conv = self.options["results"], self.options["dtype_backend"]
            args = convert_payloads(msg.get("args") or [], *conv)
            value = fn(*args, **convert_payloads(msg.get("kwargs") or {}, *conv))
            wire, payloads = self.outgoing(value=value)
            reply = Protocol.callback_result(msg["id"], wire)
        except Exception as exc:   # becomes an R condition; KeyboardInterrupt passes on
            self.callback_errors.append(exc)
            reply = Protocol.callback_error(msg["id"], exc)
        finally:
            self.callbacks_running.pop()
        if payloads is None:
            self.channel.send(reply)
            return
        self.sent_segments.extend(payloads.segments)
        self.channel.send(reply, payloads.frames)

    # -- output and warnings -------------------------------------------------------
    def emit(self, event: Output | Warned | Display) -> None:
        """The one handler of what R prints, warns and draws: the innermost
        listener that takes the event, else R's output to the session's
        streams (``sys.stdout``/``sys.stderr`` by default), warnings as
        :class:`RWarning` at the user's line, and plots inline in Jupyter."""
        for listener in reversed(self.listeners):
            if listener(event):
                return
        if isinstance(event, Display):
            spec = inline_spec()
            if spec is not None:
                show_inline(_plot_of(event, spec))
            return
        if isinstance(event, Warned):
            _warn_at_caller(RWarning(event.message, event.rclass, event.call))
            return
        stream = self.sinks.get(event.stream) or (sys.stderr if event.stream == "stderr" else sys.stdout)
        stream.write(output_text(event))
        stream.flush()

    # -- requests ---------------------------------------------------------------
    def check_usable(self) -> None:
        if self.closed:
            raise RBridgeError("the session is closed")
        if self.dead:
            raise WorkerDied(f"the R worker at {self.endpoint} has died; open a new session")

    def message(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.protocol.message(op, **fields)

    def outgoing(self, **values: Any) -> tuple[dict[str, Any], PayloadWriter]:
        """The wire forms of ``values`` (see _convert.to_wire) and the Arrow
        payloads they refer to, with ``doubles_checked`` when the payloads'
        doubles were checked (SPEC §8a); nothing is left behind when one cannot
        be sent."""
        payloads = PayloadWriter(self.arena_writer, chunks=self.chunks)
        reference = self.reference
        try:
            wire = {}
            args = values.pop("args", None)
            if args is not None:   # the positional arguments, each its own value
                wire["args"] = [to_wire(v, reference, payloads) for v in args]
            for k, v in values.items():
                wire[k] = to_wire(v, reference, payloads)
            if payloads.doubles_checked:   # the worker need not look for R's NA among them
                wire["doubles_checked"] = True
            return wire, payloads
        except BaseException:
            payloads.discard(sent=False)
            raise

    def request(self, op: str, fields: dict[str, Any], timeout: float | None = None,
                payloads: PayloadWriter | None = None) -> Any:
        """Sends one request and returns the ``value`` of its result."""
        try:
            self.check_usable()
            with self.channel.lock:
                reply = self._exchange(op, fields, timeout, payloads)
            if reply.get("warnings"):
                for warned in Protocol.warnings_of(reply):
                    self.emit(warned)
            if reply["op"] == "error":
                error = error_from_reply(reply.get("error") or {})
                if "python_error" in error.rclass and self.callback_errors:
                    raise error from self.callback_errors[-1]
                raise error
            if reply["op"] != "result":
                raise ProtocolError(f"unexpected reply {reply['op']!r} to {op}")
            return reply.get("value")
        finally:
            if payloads is not None:
                payloads.discard()   # the worker unlinks segments it read; this covers the rest
            if self.sent_segments and not self.callbacks_running:
                for name in self.sent_segments:
                    unlink_segment(name)
                self.sent_segments.clear()

    def plot_spec(self, op: str) -> dict[str, Any] | None:
        """The ``plots`` key of a request: the innermost ``plots()`` block's,
        else, in a Jupyter kernel, the inline defaults."""
        if op not in PLOTTING_OPS:
            return None
        spec = self.plot_specs[-1] if self.plot_specs else inline_spec()
        return spec.wire() if spec is not None else None

    def reserve_shm(self, nbytes: int) -> None:
        """Has both sides allocate ``nbytes`` of shared memory for payloads
        now, each while the other does (``connect(shm_reserve=)``)."""
        assert self.arena_writer is not None
        ours = threading.Thread(target=self.arena_writer.reserve, args=(nbytes,), name="rbridge-reserve")
        ours.start()
        try:   # a worker older than the op reserves nothing
            capable = "reserve" in (self.info.get("capabilities") or ())
            value = self.request("reserve", {"bytes": nbytes}) if capable else {"reserved": 0, "arena": None}
        finally:
            ours.join()
        if value["arena"] is not None:
            self.arena_reader.map(value["arena"])   # which unlinks its name: nothing is left if we die
        self.worker_reserved = int(value["reserved"])

    def _exchange(self, op: str, fields: dict[str, Any], timeout: float | None,
                  payloads: PayloadWriter | None) -> dict[str, Any]:
        """Sends the request and returns its final reply (under the channel's lock)."""
        if self.protocol.pending_releases:
            self._send_releases()
        # a call into R from inside a callback names it as its parent
        parent = self.callbacks_running[-1] if self.callbacks_running else None
        if parent is None:
            self.callback_errors.clear()
        msg = self.protocol.request(op, fields, timeout=timeout, parent=parent, shm=self.shm,
                                    plots=self.plot_spec(op))
        try:
            return self.channel.request(msg, frames=payloads.frames if payloads else (), timeout=timeout,
                                        on_interrupt=self._interrupt_on_main)
        except WorkerDied:
            self.dead = True
            raise
        except RTimeout:
            self.channel.send(self.protocol.interrupt(msg["id"]))
            raise

    def _interrupt_on_main(self, request_id: int) -> None:
        self.channel.send(self.protocol.interrupt(request_id))

    def control_request(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """A request on a second socket, usable while another thread waits."""
        self.check_usable()
        with self._control_lock:
            if self._control is None:
                self._control = self._new_channel(1)
                self.sockets.extend(self._control.sockets)
            return self._control.request(self.message(op, **fields), timeout=timeout)

    # -- handles ----------------------------------------------------------------
    def release(self, handle_id: int, now: bool) -> None:
        """Queues a release; it travels with the next request. ``now`` (from user
        code, never from a finalizer, which must not block) sends it at once."""
        self.live_ids.discard(handle_id)
        if self.closed or self.dead:
            return
        self.protocol.queue_release(handle_id)
        if now:
            with self.channel.lock:
                self._send_releases()

    def arrow_of(self, handle_id: int) -> Any:
        """The Arrow form of a handle's object (RObject.to_arrow)."""
        return self.session.with_options(results="arrow")._request(
            "call", fn="identity", args=[_codec.handle_ext(handle_id)], kwargs={}, mode="arrow")

    @contextlib.contextmanager
    def capturing_plots(self, spec: PlotSpec, take: Callable[[Plot], None]) -> Iterator[None]:
        """Requests made inside draw at ``spec``; each plot goes to ``take``."""
        def listener(event: Output | Warned | Display) -> bool:
            if not isinstance(event, Display):
                return False
            take(_plot_of(event, spec))
            return True
        self.listeners.append(listener)
        self.plot_specs.append(spec)
        try:
            yield
        finally:
            self.plot_specs.remove(spec)
            self.listeners.remove(listener)

    def draw(self, obj: RObject) -> Any:
        """A plot object drawn as PNG at the plot defaults (RObject._repr_png_)."""
        plots: list[Plot] = []
        with self.capturing_plots(default_spec("png"), plots.append):
            self.session.call("rserver:::draw_visible", obj)
        return plots[0]._repr_png_() if plots else None

    def take_releases(self) -> list[Any]:
        """The queued releases as handle references, emptying the queue."""
        return self.protocol.take_releases()

    def _send_releases(self) -> None:
        """Sends queued releases as one message, without waiting for its reply."""
        message = self.protocol.release_message()
        if message is not None:
            self.channel.send(message)

    # -- lifecycle --------------------------------------------------------------
    def close(self, shutdown: bool = False) -> None:
        """Closes the session; ``shutdown`` (always so for a private worker)
        also stops the worker."""
        if self.closed:
            return
        if not self.dead:
            try:
                with self.channel.lock:
                    if self.worker is not None or shutdown or self.info.get("session"):
                        self.channel.request(self.message("shutdown"), timeout=SHUTDOWN_REPLY_WAIT)
                    else:   # an attached worker lives on: give back what we hold
                        self.protocol.pending_releases.extend(self.live_ids)
                        self._send_releases()
            except (RBridgeError, zmq.ZMQError):
                pass
        self.closed = True
        self.live_ids.clear()
        self.protocol.pending_releases.clear()
        self.channel.close()
        if self.arena_writer is not None:
            for arena in self.arena_writer.arenas:
                unlink_segment(arena.name)   # normally gone already: the worker unlinks on mapping
            self.arena_writer.close()
        self.arena_reader.close()
        if self._control is not None:
            self._control.close()
        self.context.term()
        if self.worker is not None:
            self.worker.stop()
        if self.finalizer is not None:
            self.finalizer.detach()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _plot_of(event: Display, spec: PlotSpec) -> Plot:
    return Plot(event.data, event.mime, event.width, event.height, spec.dpi)


def output_text(event: Output) -> str:
    text = event.text
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


def _warn_at_caller(warning: Warning) -> None:
    """Issues a warning attributed to the first frame outside this package:
    the user's line that made the call."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)


def _finalize(context: zmq.Context, sockets: list[zmq.Socket], worker: LocalWorker | None) -> None:
    """At interpreter exit or when an unclosed session is collected. It holds
    no reference to the session, and never blocks: the sockets are closed
    before the context is terminated (pyzmq's own clean-up of a context
    collected with its sockets waits for them forever), and a private worker
    is stopped without waiting for it."""
    for sock in sockets:
        sock.close(linger=0)
    context.term()
    if worker is not None:
        worker.abandon()


class Session:
    """A connection to one R worker. Use :func:`bridge.connect` to make one.

    R functions are attributes (``r.sum(1, 2)``), R globals are items
    (``r["x"] = 1``). A session is a context manager; closing it shuts down a
    private worker. Sessions are thread-safe: requests from several threads
    are serialized.
    """

    def __init__(self, core: _Core, options: dict[str, Any]) -> None:
        self._core = core
        self._options = options

    # -- evaluation -------------------------------------------------------------
    def eval(self, code: str) -> Any:
        """Evaluates R code in the global environment; returns the value of the
        last expression, converted (or as an :class:`RObject`)."""
        return self._request("eval", code=code)

    def call(self, fn: str | RObject, *args: Any, **kwargs: Any) -> Any:
        """Calls an R function by name (``"sum"``, ``"stats::median"``) or by
        handle, with positional and named arguments."""
        target = fn if isinstance(fn, str) else _codec.handle_ext(self._handle_of(fn))
        plain = None if kwargs else scalars_wire(args)
        if plain is not None:   # nothing to convert: the common small call
            return self._request_with(self._options, "call", None, fn=target, args=plain, kwargs={})
        fields, payloads = self._core.outgoing(args=args, kwargs=kwargs)
        return self._request_with(self._options, "call", payloads, fn=target, **fields)

    def get(self, name: str) -> Any:
        """The value of an R variable, looked up from the global environment."""
        return self._request("get", name=name)

    def assign(self, name: str, value: Any) -> None:
        """Assigns a Python value to an R global variable."""
        fields, payloads = self._core.outgoing(value=value)
        self._request("assign", _payloads=payloads, name=name, **fields)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.assign(name, value)

    def __getattr__(self, name: str) -> RFunction:
        if name.startswith("_"):
            raise AttributeError(name)
        return RFunction(self, name)

    def __dir__(self) -> list[str]:
        own = set(super().__dir__())
        try:
            names = self._request_with({**DEFAULT_OPTIONS, "timeout": 10.0}, "call",
                                       fn="rserver:::completion_names", args=[], kwargs={})
        except RBridgeError:
            return sorted(own)
        return sorted(own | python_names(_as_list(names)))

    def importr(self, package: str) -> Namespace:
        """Loads an R package's namespace; its exports become attributes."""
        exports = self.call("rserver:::namespace_exports", package)
        return Namespace(self, package, _as_list(exports))

    # -- options ----------------------------------------------------------------
    def with_options(self, **options: Any) -> Session:
        """A view of this session whose calls use these options:

        - ``timeout``: seconds; R is interrupted and :class:`bridge.RTimeout`
          raised when a request takes longer.
        - ``convert``: ``False`` returns every result as an :class:`RObject`.
        - ``results``: ``"pandas"`` (default) or ``"arrow"``: the type of
          converted data (see README, "Conversion"): data.frames as pandas
          DataFrames or pyarrow Tables, vectors as numpy arrays or pyarrow Arrays.
        - ``dtype_backend``: the dtypes of pandas results, as in
          ``pandas.read_csv``: ``"numpy"`` (default; NA becomes NaN, None or
          NaT), ``"numpy_nullable"`` or ``"pyarrow"`` (both keep NA apart
          from NaN: the lossless choice for data that goes back to R).

        Options never collide with R argument names, which go to the R function.
        """
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        _check_choices(options.get("results", "pandas"), options.get("dtype_backend", "numpy"))
        return Session(self._core, {**self._options, **options})

    def _request(self, op: str, _payloads: PayloadWriter | None = None, **fields: Any) -> Any:
        return self._request_with(self._options, op, _payloads, **fields)

    def _request_with(self, options: dict[str, Any], op: str, _payloads: PayloadWriter | None = None,
                      **fields: Any) -> Any:
        if not options["convert"] and op in ("eval", "call", "get") and "mode" not in fields:
            fields["mode"] = "handle"
        value = self._core.request(op, fields, timeout=options["timeout"], payloads=_payloads)
        return convert_payloads(value, options["results"], options["dtype_backend"])

    def _handle_of(self, obj: Any) -> int:
        hid = self._core.handle_id(obj)
        if hid is None:
            raise TypeError(f"fn must be a function name or an RObject, not {type(obj).__name__}")
        return hid

    # -- worker status and control ----------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """What the worker said about itself at the handshake (R version, pid, ...)."""
        return dict(self._core.info)

    @property
    def endpoint(self) -> str:
        """The worker's ZeroMQ endpoint (``ipc://…`` for a private worker)."""
        return self._core.endpoint

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id (on the worker's host)."""
        return self._core.info.get("pid")

    @property
    def uses_shared_memory(self) -> bool:
        """Whether large payloads go through shared memory (the handshake
        proved that the worker sees this host's segments)."""
        return self._core.shm

    def ping(self) -> dict[str, Any]:
        """Asks the worker's I/O thread what R is doing; answered while R is busy.

        Returns ``state`` ("idle"/"busy"), ``request`` and ``request_op`` (the
        request in progress), ``busy_for`` (seconds), ``depth`` and ``pid``.
        """
        reply = self._core.control_request("ping")
        return {k: v for k, v in reply.items() if k not in ("v", "id", "op")}

    status = ping

    def interrupt(self) -> bool:
        """Interrupts the R computation in progress (from any thread).
        Returns whether something was running."""
        reply = self._core.control_request("interrupt")
        return bool(reply.get("value"))

    def live_handles(self) -> int:
        """The number of R objects the worker holds for clients (after sending
        the releases queued so far)."""
        core = self._core
        core.check_usable()
        with core.channel.lock:
            value = core.request("release", {"handles": core.take_releases()})
        return int(value["live"])

    def diagnostics(self) -> Diagnostics:
        """What this session holds now (no round trip to the worker)."""
        core = self._core
        writer = core.arena_writer
        return Diagnostics(
            worker_pid=self.worker_pid,
            worker_directory=str(core.worker.directory) if core.worker is not None else None,
            callables=len(core.callables),
            messages_sent=dict(core.channel.sent),
            arenas=len(writer.arenas) if writer is not None else 0,
            regions_out=writer.regions_out() if writer is not None else 0,
            worker_arenas_mapped=tuple(core.arena_reader.mapped),
            shm_reserved=writer.reserved if writer is not None else 0,
            worker_shm_reserved=core.worker_reserved)

    @contextlib.contextmanager
    def plots(self, width: float = 7.0, height: float = 5.0, dpi: float = 144.0, format: str = "png",
              on_plot: Callable[[Plot], Any] | None = None) -> Iterator[Plots]:
        """Collects the plots R draws during the calls made inside the block
        (in any thread of this session): a list of :class:`bridge.Plot`, one
        per page, blank pages left out. ``width`` and ``height`` are inches,
        ``format`` is ``"png"`` or ``"svg"``; ``on_plot`` is called with each
        plot as it arrives (``IPython.display.display`` shows it at once). A
        visible plot object, such as a ggplot that ``eval`` returns, is drawn
        as R's console would draw it. Each call draws on a device of its own,
        closed when the call ends, unless R code opened a device itself (that
        one receives the plots)."""
        spec = PlotSpec(width, height, dpi, format)
        collected = Plots()

        def take(plot: Plot) -> None:
            collected.append(plot)
            if on_plot is not None:
                on_plot(plot)
        with self._core.capturing_plots(spec, take):
            yield collected

    @contextlib.contextmanager
    def capture_output(self) -> Iterator[CapturedOutput]:
        """Collects R's output instead of writing it to ``sys.stdout``/``sys.stderr``."""
        captured = CapturedOutput()

        def take(event: Output | Warned | Display) -> bool:
            if not isinstance(event, Output):
                return False   # warnings still reach the caller
            (captured._stderr if event.stream == "stderr" else captured._stdout).write(output_text(event))
            return True
        listeners = self._core.listeners
        listeners.append(take)
        try:
            yield captured
        finally:
            listeners.remove(take)

    # -- lifecycle --------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._core.closed

    def close(self) -> None:
        """Closes the session; a private worker is shut down and its files removed.
        An attached worker keeps running (the session's handles are released)."""
        self._core.close()

    def shutdown(self) -> None:
        """Stops the worker and closes the session. For an attached worker
        (``connect("tcp://...")``) this stops it for every client: it finishes
        the requests queued before this one, answers, and ``rserver::serve()``
        returns."""
        self._core.check_usable()
        self._core.close(shutdown=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<bridge.Session {self._core.endpoint} ({state})>"


def _check_choices(results: Any, dtype_backend: Any) -> None:
    if results not in RESULT_TYPES:
        raise ValueError(f"results must be one of {RESULT_TYPES}, not {results!r}")
    if dtype_backend not in DTYPE_BACKENDS:
        raise ValueError(f"dtype_backend must be one of {DTYPE_BACKENDS}, not {dtype_backend!r}")


def _as_list(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return [str(v) for v in values]


def connect(endpoint: str | None = None, *, timeout: float | None = None,
            startup_timeout: float = 30.0, rscript: str | None = None,
            worker_env: dict[str, str] | None = None,
            stdout: IO[str] | None = None, stderr: IO[str] | None = None,
            results: str = "pandas", dtype_backend: str = "numpy", shm: bool | None = None,
            liveness: float = LIVENESS, server_key: str | os.PathLike[str] | bytes | None = None,
            client_key: str | os.PathLike[str] | bytes | None = None, shm_reserve: int = 0) -> Session:
    """Opens a session.

    Args:
        endpoint: ``None`` starts a private local worker (an ``Rscript`` child on
            an ``ipc://`` socket in a private directory) that lives as long as
            the session. ``"tcp://host:port"`` or ``"ipc://path"`` attaches to
            a running worker (``rserver::serve(endpoint)``).
        timeout: default per-request timeout in seconds (``None``: no limit).
        startup_timeout: how long to wait for the worker's handshake.
        rscript: the ``Rscript`` executable for a private worker.
        worker_env: extra environment variables for a private worker.
        stdout, stderr: where R's output goes (default: ``sys.stdout``/``sys.stderr``
            at the time of writing).
        results: ``"pandas"`` or ``"arrow"``, the default result type for data
            (see :meth:`Session.with_options`).
        dtype_backend: ``"numpy"``, ``"numpy_nullable"`` or ``"pyarrow"``, the
            default dtypes of pandas results (see :meth:`Session.with_options`).
        shm: ``None`` (default) moves large payloads through shared memory when
            the handshake proves that the worker sees this host's segments;
            ``False`` always uses socket frames.
        liveness: seconds a worker may stay silent (no reply, no answer to
            pings, no heartbeat) before it is declared dead with
            :class:`bridge.WorkerDied`. A stalled worker (stopped, swapping)
            that resumes within it finishes the call in progress. A worker
            whose process exits, or whose connection is lost and not back
            within 1.5 s, is declared dead at once.
        server_key, client_key: connect with CurveZMQ encryption and
            authentication (a server started with ``--server-key``):
            ``server_key`` is the server's public key file (``NAME.key``) or its
            Z85 text, ``client_key`` this client's secret key file
            (``NAME.key_secret``) or its Z85 secret key. Give both or neither.
        shm_reserve: bytes of shared memory (at most 512 MiB) that this client
            and the worker each allocate for payloads while the session starts,
            so that the first large transfers in either direction are written
            into pages that exist. A session's first 80 MB transfer otherwise
            spends about 25 ms on the kernel's fresh pages, half or more of
            the transfer. It costs that much of ``/dev/shm`` on each side for
            the whole session, and about 0.3 ms per MB in ``connect``. Used
            only when payloads travel through shared memory; a side whose
            ``/dev/shm`` has no room reserves nothing, which
            :meth:`Session.diagnostics` shows.

    Raises:
        WorkerNotAvailable: R or the ``rserver`` package is missing, or no
            worker answered at ``endpoint``.
        ServerBusy: a server admits no new session now (its maximum is open,
            or it is shutting down).
        AuthenticationError: the CURVE handshake failed within 2 s.
    """
    _check_choices(results, dtype_backend)
    if not isinstance(liveness, (int, float)) or not 1 <= liveness <= 3600:
        raise ValueError(f"liveness must be a number of seconds from 1 to 3600, not {liveness!r}")
    if (server_key is None) != (client_key is None):
        raise ValueError("give both server_key and client_key, or neither")
    if isinstance(shm_reserve, bool) or not isinstance(shm_reserve, int) or not 0 <= shm_reserve <= RESERVE_MAX:
        raise ValueError(f"shm_reserve must be a number of bytes from 0 to {RESERVE_MAX}, not {shm_reserve!r}")
    if shm_reserve and shm is False:
        raise ValueError("shm_reserve reserves shared memory, which shm=False turns off")
    if server_key is not None and endpoint is None:
        raise ValueError("server_key and client_key are for a server's endpoint, not a private worker")
    keys = curve_keys(server_key, client_key) if server_key is not None else None  # type: ignore[arg-type]
    sweep_segments()      # shared-memory payloads of processes that died
    worker = (LocalWorker(rscript, {"RBRIDGE_LIVENESS": f"{liveness:g}", **(worker_env or {})})
              if endpoint is None else None)
    core = _Core(endpoint or worker.endpoint, worker, stdout, stderr, float(liveness), keys)  # type: ignore[union-attr]
    core.options.update(timeout=timeout, results=results, dtype_backend=dtype_backend)
    session = Session(core, core.options)
    core.finalizer = weakref.finalize(core, _finalize, core.context, core.sockets, worker)
    probe = None
    if shm is not False:
        with contextlib.suppress(OSError):
            probe = make_probe()
    hello = core.protocol.hello(probe, chunks=core.chunks)
    try:
        reply = core.channel.request(hello, timeout=startup_timeout)
    except (WorkerDied, RTimeout, AuthenticationError) as exc:
        failure = (worker.startup_failure() if worker is not None and not worker.is_alive()
                   else exc if isinstance(exc, AuthenticationError)
                   else WorkerNotAvailable(f"no rbridge worker answered at {core.endpoint}: {exc}"))
        core.dead = True
        core.close()
        raise failure from None
    finally:
        if probe is not None:
            unlink_segment(probe[0])
    if reply["op"] == "error":
        core.dead = True
        core.close()
        error = reply.get("error") or {}
        if "rbridge_server_busy" in (error.get("class") or ()):
            raise ServerBusy(f"{core.endpoint}: {error.get('message')}")
        raise error_from_reply(error)
    core.info = reply.get("worker") or {}
    if core.info.get("session"):
        core.channel.become_session()
        core.chunks = True   # a session's front relays every payload: chunks spare it 80 MB buffers
    core.protocol.worker_pid = core.info.get("pid")
    core.shm = bool(reply.get("shm"))
    core.arena_writer = ArenaWriter(create_segment, unlink_segment) if core.shm else None
    if shm_reserve and core.shm:
        try:
            core.reserve_shm(shm_reserve)
        except BaseException:
            session.close()
            raise
    return session
