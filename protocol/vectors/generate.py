"""Writes messages.json: golden protocol messages with their meaning.

Run once when the protocol changes (``python protocol/vectors/generate.py``) and
commit the result; the Python and R test suites only read the committed file,
so neither implementation can drift from the bytes.

Each entry has:
  name       a short identifier
  direction  "client->worker" or "worker->client"
  hex        the msgpack envelope frame
  value      its meaning as tagged JSON (see tagged() below)
  r          an R expression equal to what the R decoder yields for the bytes
             (handle references decode to raw(8) of class "rbridge_handle_ref")
  r_encode   an R expression that the R encoder must turn into exactly these
             bytes, or null where R never produces the message
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import msgpack

NA_BITS = 0x7FF00000000007A2
INT_NA = -(2**31)


def vec(kind: str, values: list[Any]) -> msgpack.ExtType:
    if kind in "il":
        body = b"".join(struct.pack("<i", INT_NA if v is None else int(v)) for v in values)
    elif kind == "d":
        body = b"".join(struct.pack("<Q", NA_BITS) if v is None else struct.pack("<d", float(v))
                        for v in values)
    else:
        body = b"".join(msgpack.packb(v) for v in values)
    return msgpack.ExtType(2, kind.encode() + struct.pack("<I", len(values)) + body)


def handle(hid: int, rclass: list[str] | None = None) -> msgpack.ExtType:
    data = struct.pack(">Q", hid) + (msgpack.packb(rclass) if rclass is not None else b"")
    return msgpack.ExtType(1, data)


def payload(ref: bytes) -> msgpack.ExtType:
    """An ext 3 reference to an Arrow payload (frames, arena region or segment)."""
    return msgpack.ExtType(3, ref)


def r_payload(ref: bytes) -> str:
    """How R's codec keeps an unresolved payload reference: its bytes."""
    return f'structure(as.raw(c({", ".join(f"0x{b:02x}" for b in ref)})), class = "rbridge_payload_ref")'


CLIENT_ARENA = b"/rbridge-c4242-" + b"0123456789abcdef" * 2
WORKER_ARENA = b"/rbridge-w4243-" + b"fedcba9876543210" * 2
SPLIT_REF = b"F" + struct.pack("<II", 1, 3)
CLIENT_REGION = b"a" + struct.pack("<QQI", 4096, 80000312, 2) + CLIENT_ARENA
WORKER_REGION = b"a" + struct.pack("<QQI", 4096, 1208, 0) + WORKER_ARENA


def tagged(value: Any) -> Any:
    """Python wire value -> JSON: bytes as {"$bin": hex}; ext 4 as {"$callable": id};
    ext 5 as {"$code": {"kind", "text"}};
    ext 3 as {"$payload": hex of the reference};
    a NaN or infinite
    double as {"$double": "NaN"}; ext 1 as {"$handle":
    {"id", "class"?}}; ext 2 as {"$vector": {"kind", "values"}} with null for NA
    and "NaN"/"Inf"/"-Inf" for special doubles."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$double": "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, msgpack.ExtType) and value.code == 1:
        (hid,) = struct.unpack(">Q", value.data[:8])
        out: dict[str, Any] = {"id": hid}
        if len(value.data) > 8:
            out["class"] = msgpack.unpackb(value.data[8:])
        return {"$handle": out}
    if isinstance(value, msgpack.ExtType) and value.code == 4:
        return {"$callable": struct.unpack(">Q", value.data)[0]}
    if isinstance(value, msgpack.ExtType) and value.code == 5:
        return {"$code": {"kind": value.data[:1].decode(), "text": value.data[1:].decode()}}
    if isinstance(value, msgpack.ExtType) and value.code == 3:
        return {"$payload": value.data.hex()}
    if isinstance(value, msgpack.ExtType) and value.code == 2:
        kind = value.data[:1].decode()
        (n,) = struct.unpack("<I", value.data[1:5])
        body = value.data[5:]
        if kind in "il":
            ints = struct.unpack(f"<{n}i", body)
            vals: list[Any] = [None if v == INT_NA else (bool(v) if kind == "l" else v) for v in ints]
        elif kind == "d":
            vals = []
            for (bits,) in struct.iter_unpack("<Q", body):
                (d,) = struct.unpack("<d", struct.pack("<Q", bits))
                if math.isnan(d) and (bits & 0xFFFFFFFF) == 1954:
                    vals.append(None)
                elif math.isnan(d) or math.isinf(d):
                    vals.append("NaN" if math.isnan(d) else ("Inf" if d > 0 else "-Inf"))
                else:
                    vals.append(d)
        else:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(body)
            vals = list(unpacker)
        return {"$vector": {"kind": kind, "values": vals}}
    return value


def callable_ref(cid: int) -> msgpack.ExtType:
    return msgpack.ExtType(4, struct.pack(">Q", cid))


def code(kind: str, text: str) -> msgpack.ExtType:
    """R code (ext 5): kind e (expression), s (symbol) or f (formula), then UTF-8 text."""
    return msgpack.ExtType(5, kind.encode() + text.encode())


def env(id_: int, op: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "id": id_, "op": op, **fields}


WORKER_INFO = {"r_version": "4.2.2", "rserver_version": "0.1.0", "pid": 4242,
               "platform": "x86_64-pc-linux-gnu", "endpoint": "tcp://127.0.0.1:5555",
               "capabilities": ["eval", "call", "get", "assign", "release", "ping",
                                "interrupt", "shutdown", "output"],
               "max_envelope": 268435456.0}
R_WORKER_INFO = ('list(r_version = "4.2.2", rserver_version = "0.1.0", pid = 4242L, '
                 'platform = "x86_64-pc-linux-gnu", endpoint = "tcp://127.0.0.1:5555", '
                 'capabilities = list("eval", "call", "get", "assign", "release", "ping", '
                 '"interrupt", "shutdown", "output"), max_envelope = 268435456)')

ENTRIES: list[tuple[str, str, dict[str, Any], str, str | None]] = [
    ("hello_request", "client->worker", env(1, "hello", versions=[1]),
     'list(v = 1L, id = 1L, op = "hello", versions = list(1L))', "same"),
    ("hello_request_chunks", "client->worker", env(1, "hello", versions=[1], chunks=True),
     'list(v = 1L, id = 1L, op = "hello", versions = list(1L), chunks = TRUE)', "same"),
    ("hello_reply", "worker->client", env(1, "hello", version=1, worker=WORKER_INFO),
     f'list(v = 1L, id = 1L, op = "hello", version = 1L, worker = {R_WORKER_INFO})', "same"),
    ("eval_request", "client->worker", env(2, "eval", code="x <- rnorm(5); sum(1:10)"),
     'list(v = 1L, id = 2L, op = "eval", code = "x <- rnorm(5); sum(1:10)")', "same"),
    ("eval_request_with_options", "client->worker",
     env(3, "eval", code="Sys.sleep(10)", mode="handle", timeout=2.5),
     'list(v = 1L, id = 3L, op = "eval", code = "Sys.sleep(10)", mode = "handle", timeout = 2.5)',
     "same"),
    ("call_request", "client->worker",
     env(4, "call", fn="paste", args=[1.5, True, None, "é", b"\x00\xff", [1, "a"]],
         kwargs={"sep": "-", "opts": {"k": 2147483647}}),
     'list(v = 1L, id = 4L, op = "call", fn = "paste", args = list(1.5, TRUE, NULL, "\\u00e9", '
     'as.raw(c(0x00, 0xff)), list(1L, "a")), kwargs = list(sep = "-", opts = list(k = 2147483647L)))',
     "same"),
    ("call_request_big_int", "client->worker", env(5, "call", fn="identity", args=[2**53], kwargs={}),
     'list(v = 1L, id = 5L, op = "call", fn = "identity", args = list(9007199254740992), '
     'kwargs = structure(list(), names = character(0)))', None),
    ("call_request_handle_fn", "client->worker",
     env(6, "call", fn=handle(0x100000003), args=[handle(0x100000001)], kwargs={}),
     'list(v = 1L, id = 6L, op = "call", fn = structure(as.raw(c(0,0,0,1,0,0,0,3)), '
     'class = "rbridge_handle_ref"), args = list(structure(as.raw(c(0,0,0,1,0,0,0,1)), '
     'class = "rbridge_handle_ref")), kwargs = structure(list(), names = character(0)))', None),
    ("call_request_vectors", "client->worker",
     env(7, "call", fn="list", args=[vec("d", [1.5, None, float("nan"), float("inf")]),
                                     vec("i", [1, None, -3]), vec("l", [True, None, False]),
                                     vec("s", ["a", None, "ü"]), vec("d", [])], kwargs={}),
     'list(v = 1L, id = 7L, op = "call", fn = "list", args = list(c(1.5, NA, NaN, Inf), '
     'c(1L, NA, -3L), c(TRUE, NA, FALSE), c("a", NA, "\\u00fc"), double(0)), '
     'kwargs = structure(list(), names = character(0)))', "same"),
    ("get_request", "client->worker", env(8, "get", name="mtcars"),
     'list(v = 1L, id = 8L, op = "get", name = "mtcars")', "same"),
    ("assign_request", "client->worker", env(9, "assign", name="y", value=[1, 2, 3]),
     'list(v = 1L, id = 9L, op = "assign", name = "y", value = list(1L, 2L, 3L))', "same"),
    ("release_request", "client->worker",
     env(10, "release", handles=[handle(0x100000001), handle(0x200000002)]),
     'list(v = 1L, id = 10L, op = "release", handles = list(structure(as.raw(c(0,0,0,1,0,0,0,1)), '
     'class = "rbridge_handle_ref"), structure(as.raw(c(0,0,0,2,0,0,0,2)), '
     'class = "rbridge_handle_ref")))', None),
    ("release_reply", "worker->client",
     env(10, "result", value={"released": 2.0, "live": 5.0}, warnings=[]),
     'list(v = 1L, id = 10L, op = "result", value = list(released = 2, live = 5), warnings = list())',
     "same"),
    ("reserve_request", "client->worker", env(25, "reserve", bytes=134217728, shm=True),
     'list(v = 1L, id = 25L, op = "reserve", bytes = 134217728L, shm = TRUE)', "same"),
    ("reserve_reply", "worker->client",
     env(25, "result", value={"reserved": 134217728, "arena": WORKER_ARENA.decode()}, warnings=[]),
     f'list(v = 1L, id = 25L, op = "result", value = list(reserved = 134217728L, arena = "{WORKER_ARENA.decode()}"), '
     'warnings = list())', "same"),
    ("reserve_reply_none", "worker->client",
     env(26, "result", value={"reserved": 0, "arena": None}, warnings=[]),
     'list(v = 1L, id = 26L, op = "result", value = list(reserved = 0L, arena = NULL), warnings = list())',
     "same"),
    ("ping_request", "client->worker", env(11, "ping"),
     'list(v = 1L, id = 11L, op = "ping")', "same"),
    ("pong_busy", "worker->client",
     env(11, "pong", state="busy", request=3, request_op="eval", busy_for=1.25, depth=1, pid=4242),
     'list(v = 1L, id = 11L, op = "pong", state = "busy", request = 3L, request_op = "eval", '
     'busy_for = 1.25, depth = 1L, pid = 4242L)', "same"),
    ("interrupt_request", "client->worker", env(12, "interrupt", target=3),
     'list(v = 1L, id = 12L, op = "interrupt", target = 3L)', "same"),
    ("shutdown_request", "client->worker", env(13, "shutdown"),
     'list(v = 1L, id = 13L, op = "shutdown")', "same"),
    ("result_scalar", "worker->client", env(2, "result", value=55, warnings=[]),
     'list(v = 1L, id = 2L, op = "result", value = 55L, warnings = list())', "same"),
    ("result_na_scalar", "worker->client", env(2, "result", value=None, warnings=[]),
     'list(v = 1L, id = 2L, op = "result", value = NULL, warnings = list())',
     'list(v = 1L, id = 2L, op = "result", value = NA_real_, warnings = list())'),
    ("result_vectors", "worker->client",
     env(7, "result", value=[vec("d", [1.5, None, float("nan")]), vec("i", [None, 7]),
                             vec("l", [False, None]), vec("s", ["x", None]), b"\x01\x02"],
         warnings=[]),
     'list(v = 1L, id = 7L, op = "result", value = list(c(1.5, NA, NaN), c(NA, 7L), c(FALSE, NA), '
     'c("x", NA), as.raw(c(1, 2))), warnings = list())', "same"),
    ("result_named_list", "worker->client",
     env(7, "result", value={"a": 1.0, "b": ["z", False]}, warnings=[]),
     'list(v = 1L, id = 7L, op = "result", value = list(a = 1, b = list("z", FALSE)), '
     'warnings = list())', "same"),
    ("result_handle", "worker->client",
     env(14, "result", value=handle(0x100000002, ["lm"]), warnings=[]),
     'list(v = 1L, id = 14L, op = "result", value = structure(as.raw(c(0,0,0,1,0,0,0,2)), '
     'class = "rbridge_handle_ref"), warnings = list())', None),
    ("result_with_warning", "worker->client",
     env(15, "result", value=float("nan"),
         warnings=[{"class": ["simpleWarning", "warning", "condition"], "message": "NaNs produced",
                    "call": "log(-1)"}]),
     'list(v = 1L, id = 15L, op = "result", value = NaN, warnings = list(list('
     'class = list("simpleWarning", "warning", "condition"), message = "NaNs produced", '
     'call = "log(-1)")))', None),
    ("error_reply", "worker->client",
     env(16, "error", error={"class": ["simpleError", "error", "condition"], "message": "boom",
                             "call": "f()", "traceback": ["g()", "f()", 'stop("boom")']},
         warnings=[]),
     'list(v = 1L, id = 16L, op = "error", error = list(class = list("simpleError", "error", '
     '"condition"), message = "boom", call = "f()", traceback = list("g()", "f()", "stop(\\"boom\\")")), '
     'warnings = list())', None),
    ("error_protocol", "worker->client",
     env(0, "error", error={"class": ["rbridge_protocol_error", "rbridge_error", "error", "condition"],
                            "message": "malformed envelope: truncated msgpack data",
                            "call": None, "traceback": []}, warnings=[]),
     'list(v = 1L, id = 0L, op = "error", error = list(class = list("rbridge_protocol_error", '
     '"rbridge_error", "error", "condition"), message = "malformed envelope: truncated msgpack data", '
     'call = NULL, traceback = list()), warnings = list())', None),
    ("call_request_with_callable", "client->worker",
     env(18, "call", fn="sapply", args=[[1, 2], callable_ref(7)], kwargs={}),
     'list(v = 1L, id = 18L, op = "call", fn = "sapply", args = list(list(1L, 2L), '
     'structure(as.raw(c(0,0,0,0,0,0,0,7)), class = "rbridge_callable_ref")), '
     'kwargs = structure(list(), names = character(0)))', None),
    ("call_request_with_code", "client->worker",
     env(20, "call", fn="dplyr::filter", args=[handle(0x100000003), code("e", "x > 2")],
         kwargs={"col": code("s", "a b"), "f": code("f", "Surv(time, status) ~ age")}),
     'list(v = 1L, id = 20L, op = "call", fn = "dplyr::filter", args = list(structure(as.raw(c(0,0,0,1,0,0,0,3)), '
     'class = "rbridge_handle_ref"), quote(x > 2)), kwargs = list(col = as.name("a b"), '
     'f = quote(Surv(time, status) ~ age)))', None),
    ("callback", "worker->client",
     env(2**52 + 1, "callback", parent=18, fn=7, args=[1], kwargs={"na.rm": True}),
     'list(v = 1L, id = 4503599627370497, op = "callback", parent = 18L, fn = 7L, args = list(1L), '
     'kwargs = list(na.rm = TRUE))', None),
    ("nested_request", "client->worker",
     env(19, "call", fn="sum", args=[1], kwargs={}, parent=2**52 + 1),
     'list(v = 1L, id = 19L, op = "call", fn = "sum", args = list(1L), '
     'kwargs = structure(list(), names = character(0)), parent = 4503599627370497)', None),
    ("callback_result", "client->worker", env(2**52 + 1, "result", value=2.0),
     'list(v = 1L, id = 4503599627370497, op = "result", value = 2)', None),
    ("callback_error", "client->worker",
     env(2**52 + 1, "error", error={"class": ["python_error", "error", "condition"],
                                   "message": "ValueError: bad value", "call": None,
                                   "traceback": ["Traceback (most recent call last):\n",
                                                 "ValueError: bad value\n"],
                                   "python_type": "builtins.ValueError"}),
     'list(v = 1L, id = 4503599627370497, op = "error", error = list(class = list("python_error", '
     '"error", "condition"), message = "ValueError: bad value", call = NULL, traceback = '
     'list("Traceback (most recent call last):\\n", "ValueError: bad value\\n"), '
     'python_type = "builtins.ValueError"))', None),
    ("release_callables", "worker->client", env(0, "release_callables", callables=[7, 8]),
     'list(v = 1L, id = 0L, op = "release_callables", callables = list(7L, 8L))', "same"),
    ("assign_request_split_payload", "client->worker", env(18, "assign", name="y", value=payload(SPLIT_REF)),
     f'list(v = 1L, id = 18L, op = "assign", name = "y", value = {r_payload(SPLIT_REF)})', None),
    ("assign_request_arena_payload", "client->worker", env(19, "assign", name="y", value=payload(CLIENT_REGION)),
     f'list(v = 1L, id = 19L, op = "assign", name = "y", value = {r_payload(CLIENT_REGION)})', None),
    ("assign_request_doubles_checked", "client->worker",
     env(24, "assign", name="y", value=payload(CLIENT_REGION), doubles_checked=True),
     f'list(v = 1L, id = 24L, op = "assign", name = "y", value = {r_payload(CLIENT_REGION)}, '
     'doubles_checked = TRUE)', None),
    ("result_arena_payload", "worker->client", env(20, "result", value=payload(WORKER_REGION), warnings=[]),
     f'list(v = 1L, id = 20L, op = "result", value = {r_payload(WORKER_REGION)}, warnings = list())', None),
    ("output_stdout", "worker->client", env(17, "output", stream="stdout", text="[1] 1 2 3\n"),
     'list(v = 1L, id = 17L, op = "output", stream = "stdout", text = "[1] 1 2 3\\n")', "same"),
    # plots (SPEC §5b)
    ("eval_request_plots", "client->worker",
     env(23, "eval", code="plot(1:10)", plots={"format": "png", "width": 7.0, "height": 5.0, "dpi": 144.0}),
     'list(v = 1L, id = 23L, op = "eval", code = "plot(1:10)", plots = list(format = "png", width = 7, '
     'height = 5, dpi = 144))', None),
    ("display_png", "worker->client",
     env(23, "display", mime="image/png", data=b"\x89PNG\r\n\x1a\n", width=1008, height=720),
     'list(v = 1L, id = 23L, op = "display", mime = "image/png", data = as.raw(c(0x89, 0x50, 0x4e, 0x47, '
     '0x0d, 0x0a, 0x1a, 0x0a)), width = 1008L, height = 720L)', "same"),
    # a server of sessions (SPEC §10): what its front answers itself
    ("status_request", "client->server", env(21, "status"), 'list(v = 1L, id = 21L, op = "status")', "same"),
    ("status_reply", "server->client",
     env(21, "status", server={"pid": 4242, "uptime": 12.5, "sessions_open": 1, "max_sessions": 64,
                               "sessions_started": 3, "auth_failures": 2, "draining": False, "curve": True},
         sessions=[{"number": 3, "pid": 4250, "key": "alice", "state": "idle", "rss": 52428800.0, "cpu": 0.25,
                    "idle": 4.5}]),
     'list(v = 1L, id = 21L, op = "status", server = list(pid = 4242L, uptime = 12.5, sessions_open = 1L, '
     'max_sessions = 64L, sessions_started = 3L, auth_failures = 2L, draining = FALSE, curve = TRUE), '
     'sessions = list(list(number = 3L, pid = 4250L, key = "alice", state = "idle", rss = 52428800, '
     'cpu = 0.25, idle = 4.5)))', None),
    ("pong_server", "server->client", env(22, "pong", state="server", pid=4243),
     'list(v = 1L, id = 22L, op = "pong", state = "server", pid = 4243L)', "same"),
    ("ended", "server->client", env(0, "ended", reason="the session was idle for 300 s (--idle-timeout)"),
     'list(v = 1L, id = 0L, op = "ended", reason = "the session was idle for 300 s (--idle-timeout)")', "same"),
    ("error_server_busy", "server->client",
     env(1, "error", error={"class": ["rbridge_server_busy", "rbridge_error", "error", "condition"],
                            "message": "the server has its maximum of 64 sessions open (--max-sessions)",
                            "call": None, "traceback": []}, warnings=[]),
     'list(v = 1L, id = 1L, op = "error", error = list(class = list("rbridge_server_busy", '
     '"rbridge_error", "error", "condition"), message = "the server has its maximum of 64 sessions open '
     '(--max-sessions)", call = NULL, traceback = list()), warnings = list())', None),
]


def main() -> None:
    out = []
    for name, direction, value, r_expr, r_encode in ENTRIES:
        frame = msgpack.packb(value, use_bin_type=True)
        out.append({
            "name": name, "direction": direction, "hex": frame.hex(), "value": tagged(value),
            "r": r_expr, "r_encode": r_expr if r_encode == "same" else r_encode,
        })
    path = Path(__file__).with_name("messages.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} vectors to {path}")


if __name__ == "__main__":
    main()
