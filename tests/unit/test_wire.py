"""The client's wire pieces without a worker: codec, conversion to wire
values, Arrow payloads (frames and shared memory) and arenas."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import msgpack
import numpy as np
import pyarrow as pa
import pytest

from bridge import ProtocolError
from bridge._arena import HEADER, MAGIC, SLOTS, ArenaWriter
from bridge._codec import INT_NA, decode_vector, pack, unpack
from bridge._convert import ARROW_MIN_LENGTH, scalars_wire, to_wire
from bridge._payloads import DoublesCheck, PayloadWriter, create_segment, read_payload, unlink_segment


def no_reference(value):
    return None


# -- codec --------------------------------------------------------------------------

def test_vectors_decode_with_na_masked():
    ints = decode_vector(b"i" + struct.pack("<I", 3) + struct.pack("<3i", 1, INT_NA, 3))
    assert ints.tolist() == [1, None, 3] and ints.dtype == np.int32
    logicals = decode_vector(b"l" + struct.pack("<I", 2) + struct.pack("<2i", 1, 0))
    assert logicals.tolist() == [True, False]
    strings = decode_vector(b"s" + struct.pack("<I", 2) + msgpack.packb("a") + msgpack.packb(None))
    assert strings.tolist() == ["a", None]


@pytest.mark.parametrize("data", [b"d\x02\x00\x00\x00" + b"\x00" * 8,     # shorter than its count
                                  b"i\x01\x00",                            # shorter than its header
                                  b"z\x00\x00\x00\x00",                    # unknown kind
                                  b"s\x01\x00\x00\x00\x05"])               # a string vector holding an int
def test_malformed_vectors_are_protocol_errors(data):
    with pytest.raises(ProtocolError):
        decode_vector(data)


def test_messages_from_another_version_or_not_maps_are_refused():
    assert unpack(pack({"v": 1, "id": 1, "op": "pong"}))["op"] == "pong"
    for bad in (msgpack.packb([1, 2]), msgpack.packb({"v": 2, "id": 1, "op": "pong"}), b"\xc1"):
        with pytest.raises(ProtocolError):
            unpack(bad)


# -- conversion to wire values ---------------------------------------------------------

def test_small_values_travel_inline_and_large_arrays_as_payloads():
    assert to_wire([1, 2.5, "x", None, True], no_reference, None) == [1, 2.5, "x", None, True]
    small = to_wire(np.arange(3, dtype=np.float64), no_reference, None)
    assert small.code == 2 and small.data[:1] == b"d"
    payloads = PayloadWriter(None)
    big = to_wire(np.arange(ARROW_MIN_LENGTH, dtype=np.float64), no_reference, payloads)
    assert big.code == 3 and big.data == b"f" + struct.pack("<I", 1)
    assert len(payloads.frames) == 1


def test_the_small_call_shortcut_sends_what_to_wire_sends():
    plain = (1, -(2**31) + 1, 2**31 - 1, 2.5, "x", b"y", None, True)
    assert scalars_wire(plain) == [to_wire(v, no_reference, None) for v in plain]
    assert scalars_wire(()) == []
    # anything to_wire converts (or refuses) is left to it
    for other in (2**31, INT_NA, 2**60, np.int32(1), np.float64(1), [1], (1,), {"a": 1}, bytearray(b"z")):
        assert scalars_wire((1, other)) is None


def _with_r_na(n: int, at: int) -> np.ndarray:
    values = np.zeros(n)
    values.view(np.uint64)[at] = 0x7FF00000000007A2   # a NaN the sender means as NaN
    return values


BIG_DOUBLES = 600_000      # 4.8 MB: above the size from which the client checks doubles itself


def test_the_doubles_check_finds_rs_na_pattern_anywhere():
    n = BIG_DOUBLES
    assert DoublesCheck(pa.table({"x": np.random.default_rng(0).random(n)})).result()
    for at in (0, n // 2, n - 1):
        assert not DoublesCheck(pa.table({"x": _with_r_na(n, at)})).result()
    other_nans = np.full(n, np.nan)
    assert DoublesCheck(pa.table({"x": other_nans, "i": np.arange(n)})).result()   # other NaNs are fine


def test_the_doubles_check_reads_slices_and_chunks_and_leaves_the_rest_to_the_worker():
    n = BIG_DOUBLES
    dirty = _with_r_na(n + 20, 10)
    assert DoublesCheck(pa.table({"x": pa.array(dirty).slice(11)})).result()        # the pattern is outside
    assert not DoublesCheck(pa.table({"x": pa.array(dirty).slice(5)})).result()
    assert not DoublesCheck(pa.table({"x": pa.chunked_array([np.zeros(n), dirty])})).result()
    # not checked (the worker looks itself): few doubles, many small arrays, doubles in nested columns
    assert not DoublesCheck(pa.table({"x": np.zeros(1000)})).result()
    assert not DoublesCheck(pa.table({f"c{i}": np.zeros(2000) for i in range(400)})).result()
    assert not DoublesCheck(pa.table({"l": pa.array([np.zeros(n)], pa.list_(pa.float64())),
                                      "x": pa.array([0.0])})).result()
    assert not DoublesCheck(pa.table({"s": ["a"], "i": [1]})).result()
    writer = PayloadWriter(None)
    assert not writer.doubles_checked                                                # nothing to vouch for
    writer.add(pa.table({"x": np.zeros(n)}))
    assert writer.doubles_checked
    writer.add(pa.table({"x": np.zeros(10)}))
    assert not writer.doubles_checked                                                # every payload must be checked


def test_integers_r_cannot_hold_exactly_are_refused():
    with pytest.raises((TypeError, ValueError, OverflowError)):
        to_wire(2**60, no_reference, None)


# -- payloads and arenas --------------------------------------------------------------------

def test_a_payload_in_frames_reads_back_without_a_copy():
    table = pa.table({"x": np.arange(300_000, dtype=np.float64)})
    writer = PayloadWriter(None)
    ref = writer.add(table)
    back = read_payload(ref.data, writer.frames)
    assert back.equals(table)


@pytest.mark.parametrize("ref", [b"f" + struct.pack("<I", 2), b"F" + struct.pack("<II", 1, 3), b"q", b"f\x00"])
def test_payload_references_outside_the_message_are_protocol_errors(ref):
    with pytest.raises(ProtocolError):
        read_payload(ref, [b"x"])


@pytest.fixture
def arena_writer():
    """The client's arenas, unlinked and closed after the test."""
    writer = ArenaWriter(create_segment, unlink_segment)
    yield writer
    for arena in writer.arenas:
        unlink_segment(arena.name)
    writer.close()


def test_shared_memory_payloads_use_an_arena_and_regions_come_back(arena_writer):
    payloads = PayloadWriter(arena_writer)
    table = pa.table({"x": np.arange(300_000, dtype=np.float64)})     # 2.4 MB: shared memory
    ref = payloads.add(table)
    assert ref.data[:1] == b"a" and payloads.frames == []
    (arena,) = arena_writer.arenas
    assert bytes(arena.mm[:len(MAGIC)]) == MAGIC
    offset, size, slot = struct.unpack("<QQI", ref.data[1:21])
    assert offset >= HEADER and 0 <= slot < SLOTS
    assert read_region(arena, ref).equals(table)
    assert arena.reclaim() == 1                     # handed over until the reader gives it back
    struct.pack_into("<I", arena.mm, 64 + 4 * slot, 0)
    assert arena.reclaim() == 0
    payloads.discard(sent=False)


def read_region(arena, ref: msgpack.ExtType) -> pa.Table:
    """The table in the arena region a payload reference names."""
    offset, size, _ = struct.unpack("<QQI", ref.data[1:21])
    return pa.ipc.open_stream(pa.py_buffer(arena.mm[offset:offset + size])).read_all()


def run_alone(code: str) -> None:
    """Runs ``code`` in a Python process of its own (for limits that would
    hurt this one), which must print "ok"."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "ok", out.stderr


def test_a_reserved_arena_has_its_pages_before_the_first_payload_which_goes_into_it(arena_writer):
    assert arena_writer.reserve(8 << 20) == 8 << 20 and arena_writer.reserved == 8 << 20
    (arena,) = arena_writer.arenas
    assert arena.reserved == arena.mapped == HEADER + (8 << 20)
    assert os.fstat(arena.fd).st_blocks * 512 >= 8 << 20          # allocated, not sparse
    payloads = PayloadWriter(arena_writer)
    table = pa.table({"x": np.arange(900_000, dtype=np.float64)})  # 7.2 MB
    ref = payloads.add(table)
    assert arena_writer.arenas == [arena] and ref.data[21:].decode() == arena.name
    assert read_region(arena, ref).equals(table)
    payloads.discard(sent=False)
    for bad in (0, -1, (1 << 29) + 1):
        assert arena_writer.reserve(bad) == 0
    assert len(arena_writer.arenas) == 1


def test_a_reservation_without_room_keeps_nothing():
    # RLIMIT_FSIZE stands in for a /dev/shm without room: the segment cannot be
    # sized (EFBIG). Room that runs out while pages are allocated is the
    # worker suite's small /dev/shm test.
    code = """
import os, resource, signal
from bridge._arena import ArenaWriter
from bridge._payloads import create_segment, unlink_segment
writer = ArenaWriter(create_segment, unlink_segment)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, resource.RLIM_INFINITY))
assert writer.reserve(96 << 20) == 0 and writer.arenas == [] and writer.reserved == 0
assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"rbridge-c{os.getpid()}-")]
print("ok")
"""
    run_alone(code)


def test_a_payload_that_does_not_fit_in_shared_memory_goes_in_frames(monkeypatch):
    def full(size, reserve=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bridge._payloads.create_segment", full)   # /dev/shm is full (one-off segments too)
    payloads = PayloadWriter(ArenaWriter(full, unlink_segment))
    ref = payloads.add(pa.table({"x": np.arange(300_000, dtype=np.float64)}))
    assert ref.data[:1] in (b"f", b"F") and payloads.frames          # frames (large buffers on their own)


def test_fresh_arena_pages_are_written_through_the_file_and_then_through_the_mapping(arena_writer):
    rng = np.random.default_rng(3)
    for round_ in range(3):   # fresh pages, then the same pages again, then more
        payloads = PayloadWriter(arena_writer)
        tables = [pa.table({"x": rng.normal(size=300_000)}) for _ in range(round_ + 1)]
        refs = [payloads.add(t) for t in tables]
        (arena,) = arena_writer.arenas
        for ref, table in zip(refs, tables, strict=True):
            offset, size, slot = struct.unpack("<QQI", ref.data[1:21])
            assert offset + size <= arena.reserved      # only what was written is taken to exist
            assert read_region(arena, ref).equals(table)
            struct.pack_into("<I", arena.mm, 64 + 4 * slot, 0)   # the reader gives it back
        assert os.fstat(arena.fd).st_blocks * 512 >= arena.reserved
        payloads.discard()


def test_a_write_that_fails_in_an_arena_gives_the_region_back_and_uses_frames():
    # RLIMIT_FSIZE stands in for a full /dev/shm: writing fresh pages fails with EFBIG
    code = """
import resource, signal, struct, numpy as np, pyarrow as pa
from bridge._arena import ArenaWriter
from bridge._payloads import PayloadWriter, create_segment, unlink_segment
writer = ArenaWriter(create_segment, unlink_segment)
table = pa.table({"x": np.arange(300_000, dtype=np.float64)})
first = PayloadWriter(writer).add(table)
(arena,) = writer.arenas
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (arena.reserved + 4096, resource.RLIM_INFINITY))
payloads = PayloadWriter(writer)
second = payloads.add(table)
assert first.data[:1] == b"a" and second.data[:1] in (b"f", b"F"), (first, second)
assert arena.reclaim() == 1 and pa.ipc.open_stream(b"".join(bytes(f) for f in payloads.frames)).read_all().equals(table)
unlink_segment(arena.name)
print("ok")
"""
    run_alone(code)
