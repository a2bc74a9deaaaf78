"""The fast paths of the data plane, against real workers: shared-memory
arenas reused across requests, zero-copy views in R over received payloads,
and streams split over several frames so that large buffers are not copied.
Each is checked for what a user sees (values identical, nothing left behind)
and for hostile input."""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import zmq
from helpers import raw_exchange, recv_reply, run_in_threads, segments, wait_until

import bridge
from bridge import _arena, _arrow, _payloads

BIG = 300_000        # doubles: 2.4 MB, above the shared-memory and view thresholds


def na_pattern_nan() -> float:
    """A NaN carrying R's NA payload (1954) that the sender means as NaN."""
    return np.frombuffer(struct.pack("<Q", 0x7FF00000000007A2), dtype=np.float64)[0]


# ---- Python -> R: arenas and views ---------------------------------------------------------------

def test_a_large_vector_arrives_as_a_view_and_behaves_like_any_vector(fresh):
    values = np.random.default_rng(1).random(BIG)
    fresh.assign("y", values)
    assert "rbridge view" in "".join(fresh.eval("capture.output(.Internal(inspect(y)))"))
    assert fresh.eval("is.double(y) && length(y) == 300000L")
    assert np.array_equal(fresh["y"], values)
    assert fresh.eval("sum(y)") == pytest.approx(values.sum())
    # copy-on-modify holds: changing y leaves a copy of it untouched
    assert fresh.eval("z <- y; z[1] <- -1; y[1] != -1 && z[1] == -1")
    # and it can be saved and read back as an ordinary vector
    assert fresh.eval("f <- tempfile(); saveRDS(y, f); v <- readRDS(f); unlink(f); identical(v, y)")
    ints = np.arange(BIG, dtype=np.int32)
    fresh.assign("i", ints)
    assert fresh.eval("is.integer(i) && identical(i, 0:299999)")


def test_arenas_are_reused_and_views_released_by_rs_collector(fresh):
    pid = os.getpid()
    values = np.arange(BIG, dtype=np.float64)
    for k in range(40):
        fresh.assign("y", values + k)
    assert fresh.eval("y[1]") == 39
    assert 1 <= fresh.diagnostics().arenas <= 3       # reused, not one per payload
    assert not segments("c", pid)                      # the worker unlinked each name on mapping
    fresh.eval("rm(y); gc(); NULL")
    assert wait_until(lambda: fresh.diagnostics().regions_out == 0, 5)   # every region came back


def test_nan_with_rs_na_payload_stays_nan_in_r(fresh):
    nan = na_pattern_nan()
    for n in (10, BIG):     # the copy path and the view path
        values = np.zeros(n)
        values[3] = nan
        fresh.assign("y", values)
        assert fresh.eval("is.nan(y[4]) && sum(is.nan(y)) == 1L")   # is.nan() is FALSE for NA


def test_nan_with_rs_na_payload_is_found_in_either_half_of_a_large_vector(fresh):
    # from 2^20 doubles the worker scans the two halves in two threads
    n = (1 << 21) + 3
    for at in (0, n // 2 - 1, n // 2, n - 1):
        values = np.zeros(n)
        values[at] = na_pattern_nan()
        fresh.assign("y", values)
        assert fresh.eval(f"is.nan(y[{at + 1}]) && sum(is.nan(y)) == 1L && !anyNA(y[-{at + 1}])")
    fresh.assign("y", np.zeros(n))
    assert "rbridge view" in "".join(fresh.eval("capture.output(.Internal(inspect(y)))"))


def test_r_na_in_either_half_of_a_large_vector_arrives_masked(fresh):
    n = (1 << 21) + 3
    for at in (0, n // 2, n - 1):
        got = fresh.eval(f"y <- as.double(seq_len({n})); y[{at + 1}] <- NA; y")
        assert isinstance(got, np.ma.MaskedArray) and got.mask.sum() == 1 and got.mask[at]
        assert got[at + 1 if at == 0 else 0] == (at + 2 if at == 0 else 1)


def test_int32_min_without_a_null_becomes_double(fresh):
    values = np.arange(BIG, dtype=np.int32)
    values[5] = np.iinfo(np.int32).min
    fresh.assign("y", values)
    assert fresh.eval("is.double(y) && !anyNA(y) && y[6] == -2147483648")


def test_masked_values_arrive_as_na_without_a_view(fresh):
    values = np.ma.MaskedArray(np.arange(BIG, dtype=np.float64), mask=np.arange(BIG) % 1000 == 0)
    fresh.assign("y", values)
    assert fresh.eval("sum(is.na(y)) == 300L")
    assert "rbridge view" not in "".join(fresh.eval("capture.output(.Internal(inspect(y)))"))


def test_data_frame_columns_through_an_arena(fresh):
    frame = pd.DataFrame({"d": np.linspace(0, 1, BIG), "i": np.arange(BIG, dtype=np.int32),
                          "s": pd.Categorical(np.where(np.arange(BIG) % 2 == 0, "a", "b"))})
    fresh.assign("df", frame)
    assert fresh.eval("identical(df$i, 0:299999) && identical(levels(df$s), c('a', 'b')) && nrow(df) == 300000L")
    back = fresh["df"]
    pd.testing.assert_frame_equal(back.astype({"d": "float64", "i": "int32"}), frame, check_dtype=False)


# ---- R -> Python: the worker's arena -------------------------------------------------------------

def test_results_are_read_in_place_and_give_their_region_back(fresh):
    worker = fresh.worker_pid
    fresh.eval(f"x <- as.numeric(seq_len({BIG}))")
    first = fresh["x"]
    assert not first.flags.writeable and not first.flags.owndata
    assert first[-1] == BIG
    mapped = fresh.diagnostics().worker_arenas_mapped
    assert len(mapped) == 1
    (name,) = mapped
    del first
    for _ in range(20):                    # the one region is handed back and reused each time
        assert fresh["x"][0] == 1
    assert fresh.diagnostics().worker_arenas_mapped == (name,)
    assert not segments("w", worker)       # mapped once, and unlinked at once


def test_results_kept_by_the_user_stay_intact(fresh):
    kept = [fresh.eval(f"as.numeric(seq_len({BIG})) + {k}") for k in range(6)]
    for k, values in enumerate(kept):
        assert values[0] == 1 + k and values[-1] == BIG + k


# ---- streams over several frames ------------------------------------------------------------------

def test_large_buffers_go_out_as_their_own_frames():
    values = np.arange(BIG, dtype=np.float64)
    writer = _payloads.PayloadWriter(None)
    ref = writer.add(pa.table({"a": values, "b": values * 2}))
    assert ref.data[:1] == b"F"
    first, count = struct.unpack("<II", ref.data[1:])
    assert (first, count) == (1, len(writer.frames)) and count >= 3
    big = [f for f in writer.frames if isinstance(f, pa.Buffer) and f.size == values.nbytes]
    assert big and big[0].address == values.ctypes.data      # the numpy memory itself, not a copy


def test_with_chunks_large_buffers_go_out_in_chunks_of_their_own_memory():
    values = np.arange(BIG, dtype=np.float64)
    writer = _payloads.PayloadWriter(None, chunks=True)
    ref = writer.add(pa.table({"a": values, "b": values * 2}))
    assert ref.data[:1] == b"F"
    first, count = struct.unpack("<II", ref.data[1:])
    assert (first, count) == (1, len(writer.frames)) and count >= 3
    start, end = values.ctypes.data, values.ctypes.data + values.nbytes
    mine = [f for f in writer.frames if isinstance(f, pa.Buffer) and start <= f.address < end]
    # the numpy memory itself, not a copy, in consecutive chunks of at most chunk_size bytes
    assert [f.address for f in mine] == list(range(start, end, mine[0].size))
    assert sum(f.size for f in mine) == values.nbytes and len(mine) >= 2
    assert max(memoryview(f).nbytes for f in writer.frames) <= _payloads.chunk_size(values.nbytes * 2 + 4096)


def test_payloads_are_chunked_only_while_the_message_has_room():
    values = np.arange(BIG, dtype=np.float64)       # 2.4 MB: three chunks, between two small frames
    writer = _payloads.PayloadWriter(None, chunks=True)
    spans = [struct.unpack("<II", writer.add(pa.table({"a": values})).data[1:]) for _ in range(300)]
    for (first, count), (after, _) in zip(spans, spans[1:], strict=False):
        assert after == first + count                      # consecutive frames
        assert count == (5 if first + 4 <= _payloads.MAX_FRAMES - 1 else 3)
    assert spans[0][1] == 5 and spans[-1][1] == 3


def test_split_streams_round_trip_over_tcp(tcp_worker):
    with bridge.connect(tcp_worker[0], shm=False) as s:
        frame = pd.DataFrame({"a": np.arange(BIG, dtype=np.float64), "b": np.arange(BIG, dtype=np.int32),
                              "c": np.where(np.arange(BIG) % 3 == 0, "x", "yz")})
        s.assign("df", frame)
        assert s.eval("identical(df$a, as.numeric(0:299999)) && identical(df$b, 0:299999) && df$c[2] == 'yz'")


def _after_hello(endpoint: str, hello: dict, frames: list) -> list[bytes]:
    """The reply to ``frames`` from a bare DEALER that said ``hello`` first."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    try:
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": "hello", "versions": [1], **hello}))
        assert msgpack.unpackb(recv_reply(sock, 20000)[0], raw=False)["op"] == "hello"
        sock.send_multipart(frames)
        return recv_reply(sock, 20000)   # an unasked pong may come first: an earlier client left
    finally:
        sock.close(linger=0)
        ctx.term()


def _large_result(endpoint: str, hello: dict) -> tuple[bytes, list[bytes]]:
    """A 24 MB result, to a client that said ``hello``."""
    envelope, *frames = _after_hello(endpoint, hello, [msgpack.packb(
        {"v": 1, "id": 3, "op": "eval", "code": "as.numeric(seq_len(3e6))"})])
    return msgpack.unpackb(envelope, raw=False)["value"].data, frames


def test_large_results_come_in_chunks_to_a_client_that_asked(tcp_worker):
    ref, frames = _large_result(tcp_worker[0], {"chunks": True})
    first, count = struct.unpack("<II", ref[1:])
    assert ref[:1] == b"F" and (first, count) == (1, len(frames))
    stream = b"".join(frames)
    assert count == -(-len(stream) // _payloads.chunk_size(len(stream)))       # the sender's chunks
    assert max(len(f) for f in frames) <= _payloads.chunk_size(len(stream))
    values = pa.ipc.open_stream(stream).read_all().column(0).to_numpy()
    assert np.array_equal(values, np.arange(1, 3_000_001, dtype=np.float64))
    ref, frames = _large_result(tcp_worker[0], {})                               # and in one frame otherwise
    assert ref == b"f" + struct.pack("<I", 1) and len(frames) == 1 and len(frames[0]) == len(stream)


@pytest.mark.parametrize("chunks", [True, False])
def test_a_stream_in_chunks_is_read_whole(fresh, chunks):
    x = np.random.default_rng(1).normal(size=3_000_000)
    writer = _payloads.PayloadWriter(None, chunks=True)
    ref = writer.add(_arrow.numpy_to_table(x))
    assert len(writer.frames) > 3
    reply = _after_hello(fresh.endpoint, {"chunks": chunks}, [_assign(ref.data), *writer.frames])
    assert msgpack.unpackb(reply[0], raw=False)["op"] == "result", reply
    assert fresh.eval("length(x)") == len(x) and fresh.eval("sum(x)") == pytest.approx(x.sum())
    np.testing.assert_array_equal(fresh["x"], x)
    # from a client that sends chunks they are gathered once, and R views the gathered stream
    viewed = "rbridge view" in "".join(fresh.eval("capture.output(.Internal(inspect(x)))"))
    assert viewed == chunks


def test_a_large_buffer_in_a_frame_of_its_own_is_viewed_in_place(fresh):
    x = np.random.default_rng(1).normal(size=3_000_000)
    writer = _payloads.PayloadWriter(None)
    ref = writer.add(_arrow.numpy_to_table(x))
    assert len(writer.frames) == 3                     # before, the buffer, after
    reply = raw_exchange(fresh.endpoint, [_assign(ref.data), *writer.frames], timeout_ms=20000)
    assert reply["op"] == "result", reply
    assert "rbridge view" in "".join(fresh.eval("capture.output(.Internal(inspect(x)))"))
    np.testing.assert_array_equal(fresh["x"], x)


def _assign(ref: bytes, **keys: object) -> bytes:
    return msgpack.packb({"v": 1, "id": 9, "op": "assign", "name": "x", "value": msgpack.ExtType(3, ref), **keys})


@pytest.mark.parametrize("n", [10, BIG])   # the copy path and the view path
def test_doubles_checked_lets_the_worker_skip_its_na_check_and_means_what_it_says(fresh, n):
    """SPEC §8a: a sender that says doubles_checked vouches that no double has
    R's NA bit pattern; the worker then does not look. The client says it only
    when it looked (the NA-payload tests above go through it)."""
    values = np.zeros(n)
    values[3] = na_pattern_nan()
    for checked, nan_in_r in ((False, True), (True, False)):
        writer = _payloads.PayloadWriter(None)
        ref = writer.add(_arrow.numpy_to_table(values))
        assert not writer.doubles_checked                # too few doubles for the client to look
        keys = {"doubles_checked": True} if checked else {}
        reply = raw_exchange(fresh.endpoint, [_assign(ref.data, **keys), *writer.frames], timeout_ms=20000)
        assert reply["op"] == "result", reply
        # vouched for wrongly, the pattern reads as R's NA, as it would in R; nothing else changes
        assert fresh.eval("is.nan(x[4])") is nan_in_r
        assert fresh.eval("is.na(x[4]) && sum(is.na(x)) == 1L && length(x) == " + str(n) + "L")
    clean = np.random.default_rng(2).random(n)
    fresh.assign("x", clean)
    np.testing.assert_array_equal(fresh["x"], clean)


def test_the_client_vouches_for_large_doubles_only_when_none_has_rs_na_pattern(fresh):
    n = 1_000_000     # 8 MB: the client looks itself
    for at in (None, 0, n - 1):
        values = np.random.default_rng(3).random(n)
        if at is not None:
            values[at] = na_pattern_nan()
        writer = _payloads.PayloadWriter(None)
        writer.add(_arrow.numpy_to_table(values))
        assert writer.doubles_checked is (at is None)
        fresh.assign("x", values)                       # through shared memory, as a user sends it
        expected = "0L" if at is None else "1L"
        assert fresh.eval(f"sum(is.nan(x)) == {expected} && !anyNA(x[!is.nan(x)])")
        viewed = "rbridge view" in "".join(fresh.eval("capture.output(.Internal(inspect(x)))"))
        assert viewed is (at is None)                   # a value R must change is copied


def test_a_stream_split_anywhere_reads_the_same(fresh):
    table = pa.table({"x": pa.array(np.arange(5000, dtype=np.float64)), "s": pa.array(["é", None] * 2500)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    stream = sink.getvalue().to_pybytes()
    rng = np.random.default_rng(3)
    for parts in (2, 3, 7, 40):
        cuts = sorted(int(c) for c in rng.integers(0, len(stream), parts - 1))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        ref = b"F" + struct.pack("<II", 1, len(pieces))
        reply = raw_exchange(fresh.endpoint, [_assign(ref), *pieces], timeout_ms=10000)
        assert reply["op"] == "result", reply
        assert fresh.eval("identical(x$x, as.numeric(0:4999)) && identical(x$s, rep(c('é', NA), 2500))")


@pytest.mark.parametrize(("ref", "nframes", "message"), [
    (b"F" + struct.pack("<II", 1, 3), 2, "frames 1 to 3"),
    (b"F" + struct.pack("<II", 0, 1), 1, "frame 0"),
    (b"F" + struct.pack("<II", 2, 0xFFFFFFFF), 2, "frames 2 to"),
    (b"F" + struct.pack("<I", 1), 1, "malformed payload reference"),
])
def test_hostile_split_references(fresh, ref, nframes, message):
    reply = raw_exchange(fresh.endpoint, [_assign(ref)] + [b"\xff" * 8] * nframes, timeout_ms=10000)
    assert reply["op"] == "error" and message in reply["error"]["message"]
    assert fresh.sum(1, 2) == 3


# ---- hostile arena references ----------------------------------------------------------------------

def _arena_segment(payload: bytes, *, magic: bool = True, mode: int = 0o600) -> str:
    name = f"/rbridge-c{os.getpid()}-{secrets.token_hex(16)}"
    fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
    os.fchmod(fd, mode)
    body = bytearray(_arena.HEADER + len(payload))
    if magic:
        body[:8] = _arena.MAGIC
    body[_arena.HEADER:] = payload
    os.write(fd, bytes(body))
    os.close(fd)
    return name


def _region_ref(name: str, offset: int, length: int, slot: int = 0) -> bytes:
    return b"a" + struct.pack("<QQI", offset, length, slot) + name.encode()


def test_an_arena_region_written_by_hand_is_read(fresh):
    stream = pa.BufferOutputStream()
    table = pa.table({"x": [1.5, 2.5]})
    with pa.ipc.new_stream(stream, table.schema) as w:
        w.write_table(table)
    payload = stream.getvalue().to_pybytes()
    name = _arena_segment(payload)
    reply = raw_exchange(fresh.endpoint, [_assign(_region_ref(name, _arena.HEADER, len(payload)))], 10000)
    assert reply["op"] == "result" and fresh.eval("identical(x$x, c(1.5, 2.5))")
    assert not Path("/dev/shm" + name).exists()       # unlinked once mapped


@pytest.mark.parametrize(("how", "message"), [
    ("past the end", "outside the arena"),
    ("in the header", "outside the arena"),
    ("bad slot", "outside the arena"),
    ("no magic", "not an arena"),
    ("world readable", "not a private segment"),
    ("missing", "cannot open"),
])
def test_hostile_arena_references(fresh, how, message):
    payload = b"\0" * 64
    name = _arena_segment(payload, magic=how != "no magic", mode=0o644 if how == "world readable" else 0o600)
    offset, length, slot = _arena.HEADER, len(payload), 0
    if how == "past the end":
        length = 1 << 40
    elif how == "in the header":
        offset = 8
    elif how == "bad slot":
        slot = _arena.SLOTS
    elif how == "missing":
        Path("/dev/shm" + name).unlink()
    try:
        reply = raw_exchange(fresh.endpoint, [_assign(_region_ref(name, offset, length, slot))], 10000)
        assert reply["op"] == "error" and message in reply["error"]["message"]
        assert fresh.sum(1, 2) == 3
    finally:
        Path("/dev/shm" + name).unlink(missing_ok=True)


def test_regions_after_a_decode_error_are_handed_back(fresh):
    big = np.arange(BIG, dtype=np.float64)
    with pytest.raises(bridge.RError, match="NUL"):
        fresh.call("c", "a\x00b", big)        # the string fails before the worker reaches the array
    assert fresh.diagnostics().arenas == 1
    assert wait_until(lambda: fresh.diagnostics().regions_out == 0, 5)
    fresh.assign("y", big)                     # and the arena serves the next payload
    assert fresh.diagnostics().arenas == 1 and fresh.eval("identical(y, as.numeric(0:299999))")


def test_na_detection_in_large_results_is_exact(r):
    # a double whose low word is NA's (1954) but that is no NaN, next to a real NA and a NaN
    values = r.eval("""x <- as.numeric(seq_len(100000))
                       x[10] <- readBin(as.raw(c(0xa2, 0x07, 0, 0, 0, 0, 0xf0, 0x3f)), "double")
                       x[20] <- NA; x[30] <- NaN; x""")
    assert np.ma.isMaskedArray(values) and np.flatnonzero(np.ma.getmaskarray(values)).tolist() == [19]
    assert values[9] == struct.unpack("<d", bytes([0xa2, 0x07, 0, 0, 0, 0, 0xf0, 0x3f]))[0]
    assert np.isnan(np.ma.getdata(values)[29]) and not np.ma.getmaskarray(values)[29]


def test_threads_share_the_arenas_without_mixing_payloads(fresh):
    def work(i: int) -> None:
        values = np.full(BIG, float(i))
        for _ in range(4):
            fresh.assign(f"v{i}", values)
            assert fresh.eval(f"length(v{i}) == {BIG}L && all(v{i} == {i})")
            assert np.all(fresh[f"v{i}"] == i)
    assert run_in_threads(work, 6) == []


def test_a_callbacks_large_result_is_vouched_for_as_a_request_is(fresh):
    """A callback's result with payloads may say doubles_checked too (SPEC §5a)."""
    clean = np.random.default_rng(5).random(1_000_000)
    probe = fresh.eval("function(g) { v <- g(); list(sum(v), is.nan(v[8]), sum(is.na(v)), "
                       "paste(capture.output(.Internal(inspect(v))), collapse = ' ')) }")
    total, nan8, nas, inspected = probe(lambda: clean)
    assert total == pytest.approx(clean.sum()) and not nan8 and nas == 0 and "rbridge view" in inspected
    dirty = clean.copy()
    dirty[7] = na_pattern_nan()
    total, nan8, nas, inspected = probe(lambda: dirty)
    assert nan8 and nas == 1 and "rbridge view" not in inspected   # NaN kept, so copied
