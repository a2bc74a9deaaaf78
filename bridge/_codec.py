"""The msgpack encoding of protocol messages and values (``protocol/SPEC.md``).

This module is pure: it knows the wire format, not sessions. Handles decode to
:class:`HandleRef` here; the session turns them into :class:`bridge.RObject`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from ._errors import ProtocolError

PROTOCOL_VERSION = 1
EXT_HANDLE = 1
EXT_VECTOR = 2
EXT_CALLABLE = 4
EXT_CODE = 5

INT_NA = -(2**31)                 # R's NA_integer_ and NA of logicals
REAL_NA_LOW_WORD = 1954           # R's NA_real_ is a NaN with this low word
REAL_NA_BITS = 0x7FF00000000007A2
EXACT_INT = 2**53                 # doubles hold integers exactly up to here


class HandleRef:
    """A handle as it appears on the wire: its id and (from the worker) R class."""

    __slots__ = ("id", "rclass")

    def __init__(self, id: int, rclass: list[str] | None = None) -> None:
        self.id = id
        self.rclass = rclass or []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HandleRef) and (other.id, other.rclass) == (self.id, self.rclass)

    def __repr__(self) -> str:
        return f"HandleRef({self.id}, {self.rclass!r})"


def handle_ext(handle_id: int) -> msgpack.ExtType:
    """The ext value a client sends to refer to a handle."""
    return msgpack.ExtType(EXT_HANDLE, struct.pack(">Q", handle_id))


def callable_ext(callable_id: int) -> msgpack.ExtType:
    """The ext value for a Python callable registered under ``callable_id``."""
    return msgpack.ExtType(EXT_CALLABLE, struct.pack(">Q", callable_id))


def _decode_handle(data: bytes) -> HandleRef:
    if len(data) < 8:
        raise ProtocolError("handle reference shorter than 8 bytes")
    (hid,) = struct.unpack(">Q", data[:8])
    rclass = msgpack.unpackb(data[8:], raw=False) if len(data) > 8 else []
    return HandleRef(hid, [str(c) for c in rclass])


def vector_ext(kind: bytes, count: int, body: bytes | memoryview) -> msgpack.ExtType:
    """An atomic-vector ext: kind byte, u32 little-endian count, body (copied once)."""
    return msgpack.ExtType(EXT_VECTOR, b"".join((kind, struct.pack("<I", count), body)))


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.ma.MaskedArray(values, mask=mask) if mask.any() else values


def decode_vector(data: bytes) -> np.ndarray:
    """An atomic R vector as a numpy array; NA becomes a masked element."""
    if len(data) < 5:
        raise ProtocolError("vector payload shorter than its header")
    kind = data[:1]
    (n,) = struct.unpack("<I", data[1:5])
    body = memoryview(data)[5:]
    if kind in (b"i", b"l"):
        if len(body) != 4 * n:
            raise ProtocolError("vector payload length does not match its count")
        ints = np.frombuffer(body, dtype="<i4", count=n)
        mask = ints == INT_NA
        values = ints.astype(np.int32) if kind == b"i" else ints != 0
        return _masked(values, mask)
    if kind == b"d":
        if len(body) != 8 * n:
            raise ProtocolError("vector payload length does not match its count")
        reals = np.frombuffer(body, dtype="<f8", count=n).astype(np.float64)
        mask = np.isnan(reals) & ((reals.view(np.uint64) & 0xFFFFFFFF) == REAL_NA_LOW_WORD)
        return _masked(reals, mask)
    if kind == b"s":
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(body)
        out = np.empty(n, dtype=object)
        try:
            for i in range(n):
                item = unpacker.unpack()
                if item is not None and not isinstance(item, str):
                    raise ProtocolError("string vectors hold only strings and nil")
                out[i] = item
        except msgpack.OutOfData as exc:
            raise ProtocolError("string vector shorter than its count") from exc
        if unpacker.tell() != len(body):
            raise ProtocolError("vector payload length does not match its count")
        return out
    raise ProtocolError(f"unknown vector kind {kind!r}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_HANDLE:
        return _decode_handle(data)
    if code == EXT_VECTOR:
        return decode_vector(data)
    if code in (EXT_CALLABLE, EXT_CODE):      # only clients send these; kept as they are
        return msgpack.ExtType(code, data)
    raise ProtocolError(f"unknown msgpack ext type {code}")


def packer() -> Callable[[dict[str, Any]], bytes]:
    """A reusable :func:`pack`, which saves a buffer per message. Like the
    socket it feeds, one must not be used by two threads at once."""
    return msgpack.Packer(use_bin_type=True).pack


def pack(message: dict[str, Any]) -> bytes:
    """Encodes a message whose values are already wire values (see _convert)."""
    return packer()(message)


def unpack(frame: Any, ext_hook: Callable[[int, bytes], Any] = _ext_hook) -> dict[str, Any]:
    """Decodes one envelope frame (bytes, or a buffer such as a zmq Frame)."""
    try:
        msg = msgpack.unpackb(frame, raw=False, ext_hook=ext_hook, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"undecodable message from the worker: {exc}") from exc
    if not isinstance(msg, dict) or msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unexpected message from the worker: {msg!r:.200}")
    return msg
