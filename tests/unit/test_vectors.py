"""The golden messages in protocol/vectors: the R suite checks the same bytes."""

from __future__ import annotations

import json
import math
import struct

import msgpack
import numpy as np
import pytest
from helpers import VECTORS as VECTOR_DIR

from bridge import _arena, _codec, _payloads
from bridge._code import EXT_CODE, RCode
from bridge._payloads import EXT_PAYLOAD

VECTORS = json.loads((VECTOR_DIR / "messages.json").read_text())


def expected(tagged):
    """Tagged JSON (see generate.py) -> what bridge's decoder yields."""
    if isinstance(tagged, list):
        return [expected(v) for v in tagged]
    if isinstance(tagged, dict):
        if "$bin" in tagged:
            return bytes.fromhex(tagged["$bin"])
        if "$double" in tagged:
            return float(tagged["$double"].replace("Inf", "inf"))
        if "$handle" in tagged:
            return _codec.HandleRef(tagged["$handle"]["id"], tagged["$handle"].get("class", []))
        if "$callable" in tagged:
            return msgpack.ExtType(_codec.EXT_CALLABLE, tagged["$callable"].to_bytes(8, "big"))
        if "$code" in tagged:
            return msgpack.ExtType(EXT_CODE, (tagged["$code"]["kind"] + tagged["$code"]["text"]).encode())
        if "$payload" in tagged:
            return msgpack.ExtType(EXT_PAYLOAD, bytes.fromhex(tagged["$payload"]))
        if "$vector" in tagged:
            return ("vector", tagged["$vector"]["kind"], tagged["$vector"]["values"])
        return {k: expected(v) for k, v in tagged.items()}
    return tagged


def same(got, want) -> bool:
    if isinstance(want, tuple) and want[0] == "vector":
        _, kind, values = want
        mask = np.ma.getmaskarray(got)
        data = np.ma.getdata(got)
        dtype = {"d": np.float64, "i": np.int32, "l": np.bool_, "s": object}[kind]
        if data.dtype != dtype or len(data) != len(values):
            return False
        for d, m, w in zip(data.tolist(), mask.tolist(), values, strict=True):
            if w is None:
                if not (m or (kind == "s" and d is None)):
                    return False
            else:
                want_value = float(w.replace("Inf", "inf")) if isinstance(w, str) and kind == "d" else w
                if m or not same(d, want_value):
                    return False
        return True
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, dict):
        return isinstance(got, dict) and list(got) == list(want) and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same, got, want))
    return type(got) is type(want) and got == want


def wire(tagged):
    """Tagged JSON -> the wire value the Python encoder packs."""
    if isinstance(tagged, list):
        return [wire(v) for v in tagged]
    if isinstance(tagged, dict):
        if "$bin" in tagged:
            return bytes.fromhex(tagged["$bin"])
        if "$double" in tagged:
            return float(tagged["$double"].replace("Inf", "inf"))
        if "$callable" in tagged:
            return _codec.callable_ext(tagged["$callable"])
        if "$code" in tagged:
            kinds = {"e": "expr", "s": "sym", "f": "formula"}
            return RCode(kinds[tagged["$code"]["kind"]], tagged["$code"]["text"]).to_wire()
        if "$payload" in tagged:
            return msgpack.ExtType(EXT_PAYLOAD, bytes.fromhex(tagged["$payload"]))
        if "$handle" in tagged:
            h = tagged["$handle"]
            data = h["id"].to_bytes(8, "big") + (msgpack.packb(h["class"]) if "class" in h else b"")
            return msgpack.ExtType(_codec.EXT_HANDLE, data)
        if "$vector" in tagged:
            kind, values = tagged["$vector"]["kind"], tagged["$vector"]["values"]
            if kind == "s":
                return msgpack.ExtType(_codec.EXT_VECTOR, kind.encode() + len(values).to_bytes(4, "little")
                                       + b"".join(msgpack.packb(v) for v in values))
            arr = np.ma.MaskedArray(
                [0 if v is None else (float(v.replace("Inf", "inf")) if isinstance(v, str) else v)
                 for v in values],
                mask=[v is None for v in values],
                dtype={"d": np.float64, "i": np.int32, "l": np.bool_}[kind])
            from bridge._convert import array_to_wire
            return array_to_wire(arr)
        return {k: wire(v) for k, v in tagged.items()}
    return tagged


def _keep_payload_refs(code: int, data: bytes):
    """Payload references as their bytes: resolving them needs frames or segments."""
    return msgpack.ExtType(code, data) if code == EXT_PAYLOAD else _codec._ext_hook(code, data)


def test_payload_references_read_as_the_payload_reader_expects():
    for name in ("assign_request_split_payload", "assign_request_arena_payload", "result_arena_payload"):
        (vector,) = [v for v in VECTORS if v["name"] == name]
        ref = _codec.unpack(bytes.fromhex(vector["hex"]), _keep_payload_refs)["value"].data
        kind, tail = ref[:1], ref[1:]
        if kind == b"F":
            assert struct.unpack("<II", tail) == (1, 3)
        else:
            offset, length, slot = struct.unpack("<QQI", tail[:20])
            assert offset == _arena.HEADER and slot < _arena.SLOTS and _payloads._NAME.fullmatch(tail[20:].decode())


def test_every_op_and_reply_kind_has_a_vector():
    """The same set as the R suite checks: constants.json's ops and worker messages."""
    constants = json.loads((VECTOR_DIR / "constants.json").read_text())
    ops = {_codec.unpack(bytes.fromhex(v["hex"]), _keep_payload_refs)["op"] for v in VECTORS}
    assert set(constants["ops"]) | set(constants["worker_messages"]) <= ops
    assert set(constants["server_ops"]) | set(constants["server_messages"]) <= ops


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_decodes(vector):
    got = _codec.unpack(bytes.fromhex(vector["hex"]), _keep_payload_refs)
    assert same(got, expected(vector["value"]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_encodes_byte_for_byte(vector):
    assert _codec.pack(wire(vector["value"])).hex() == vector["hex"]


def test_the_client_has_the_numbers_of_constants_json():
    """The R suite checks the worker's C code against the same file."""
    from bridge import _convert, _protocol, _session, _transport

    want = json.loads((VECTOR_DIR / "constants.json").read_text())
    have = {
        "protocol_version": _codec.PROTOCOL_VERSION, "ext_handle": _codec.EXT_HANDLE,
        "ext_vector": _codec.EXT_VECTOR, "ext_payload": EXT_PAYLOAD, "ext_callable": _codec.EXT_CALLABLE,
        "ext_code": EXT_CODE, "shm_min": _payloads.SHM_MIN, "arrow_min_length": _convert.ARROW_MIN_LENGTH,
        "arena_header": _arena.HEADER, "arena_states": _arena.STATES, "arena_slots": _arena.SLOTS,
        "arena_magic": _arena.MAGIC.decode(), "arena_align": _arena.ALIGN, "arena_reserve_max": _arena.RESERVE_MAX,
        "client_key_bytes": _session.CLIENT_KEY_BYTES, "heartbeat_ms": _transport.HEARTBEAT_MS,
        "liveness": _protocol.LIVENESS, "max_frames": _payloads.MAX_FRAMES, "chunk_min": _payloads.CHUNK_MIN,
        "max_chunks": _payloads.MAX_CHUNKS,
    }
    assert have == {k: want[k] for k in have}
