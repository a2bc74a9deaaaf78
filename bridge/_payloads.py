"""Arrow payloads on the wire: binary frames, or shared memory on one host.

A payload is one Arrow IPC stream. The envelope refers to it with an ext 3
value (``protocol/SPEC.md``, "Arrow payloads"): ``b"f"`` + u32 frame number;
``b"F"`` + u32 first frame + u32 count, for a stream sent as several frames so
that large buffers go out without a copy and in chunks; ``b"a"`` + u64 offset + u64 length +
u32 slot + name, a region of a shared-memory arena (``_arena``); or ``b"m"`` +
u64 length + name, a one-off shared-memory segment. Segments are private
(mode 0600), unguessably named ``/rbridge-<c|w><pid>-<32 hex>``, unlinked by
the receiver as soon as it has mapped them, and swept at start-up when their
creator has died.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
import stat
import struct
import threading
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa

from ._arena import ArenaReader, ArenaWriter, copy_into
from ._codec import REAL_NA_BITS
from ._errors import ProtocolError

EXT_PAYLOAD = 3
#: Payloads at least this big go through shared memory when the worker can.
SHM_MIN = 1 << 20
#: pyzmq copies smaller frames anyway (zmq.COPY_THRESHOLD).
ZERO_COPY_MIN = 1 << 16
#: Buffers at least this big get frames of their own, sent without a copy ...
OWN_FRAME_MIN = 1 << 20
#: ... up to this many per payload.
MAX_OWN_FRAMES = 64
#: A large payload goes in chunks: frames of at least CHUNK_MIN bytes, about
#: MAX_CHUNKS of them. With CURVE, one whole frame is encrypted, sent and
#: decrypted one step after the other; chunks overlap those steps.
CHUNK_MIN = 1 << 20
MAX_CHUNKS = 64
#: Frames in one message the worker takes (the envelope's included).
MAX_FRAMES = 1024
#: Doubles compared per step of the NA check (a slice that stays in cache).
_CHECK_STEP = 1 << 17
#: The check runs when a payload has this many bytes of doubles, in arrays
#: of this many bytes on average (each array costs a few microseconds here,
#: so the worker checks small ones faster itself).
_CHECK_MIN = 4 << 20
_CHECK_ARRAY_MIN = 1 << 20
SHM_DIR = "/dev/shm"
_NAME = re.compile(r"/rbridge-([cw])([0-9]+)-[0-9a-f]{32}")


def _path(name: str) -> str:
    return SHM_DIR + name


def unlink_segment(name: str) -> None:
    """Unlinks a segment; one that is already gone is fine."""
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass


def _try_unlink(name: str) -> bool:
    """Unlinks a segment that may not be ours (another user's, in the sticky
    /dev/shm): whether it went."""
    try:
        os.unlink(_path(name))
    except OSError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_segments(pid: int | None = None) -> int:
    """Unlinks segments whose creating process is gone (or, with ``pid``, those
    of that process, which the caller knows has exited). Returns how many."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        m = _NAME.fullmatch("/" + entry)
        if not m:
            continue
        owner = int(m.group(2))
        if (pid is not None and owner == pid) or (pid is None and not _pid_alive(owner)):
            removed += _try_unlink("/" + entry)   # another user's leftovers stay, harmlessly
    return removed


def create_segment(size: int, reserve: int | None = None) -> tuple[str, int, mmap.mmap]:
    """A new private segment of ``size`` bytes, of which the first ``reserve``
    (default: all) are reserved: a full /dev/shm fails here, not with SIGBUS
    on first touch. Returns its name, an open descriptor and a mapping."""
    name = f"/rbridge-c{os.getpid()}-{secrets.token_hex(16)}"
    fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
        reserve = size if reserve is None else min(reserve, size)
        if reserve:
            os.posix_fallocate(fd, 0, reserve)
        mm = mmap.mmap(fd, size) if size else mmap.mmap(-1, 1)
    except BaseException:
        os.close(fd)
        unlink_segment(name)
        raise
    return name, fd, mm


def _create_mapped(size: int) -> tuple[str, mmap.mmap]:
    name, fd, mm = create_segment(size)
    os.close(fd)
    return name, mm


def make_probe() -> tuple[str, bytes]:
    """A small segment holding a random token, for the worker to read back
    during the handshake: proof that both sides see the same segments."""
    token = secrets.token_bytes(16)
    name, mm = _create_mapped(len(token))
    mm.write(token)
    mm.close()
    return name, token


def _write_stream(table: pa.Table | pa.RecordBatch, sink: Any) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)   # a RecordBatch keeps its row count even without columns


class _ChunkSink:
    """A pyarrow output stream that keeps what it is given: pyarrow hands large
    buffers over as the original memory, so they can be sent without a copy."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.closed = False

    def write(self, data: Any) -> int:
        self.chunks.append(data)
        return len(memoryview(data))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _stream_chunks(table: pa.Table | pa.RecordBatch) -> list[Any]:
    """The stream, serialized once, as the pieces pyarrow wrote."""
    sink = _ChunkSink()
    _write_stream(table, sink)
    return sink.chunks


def chunk_size(size: int) -> int:
    """The size of the chunks a payload of ``size`` bytes is sent in."""
    per = max(CHUNK_MIN, -(-size // MAX_CHUNKS))
    return (per + 4095) & ~4095


def _split(frame: Any, size: int) -> list[Any]:
    """``frame`` in pieces of at most ``size`` bytes, none copied."""
    n = memoryview(frame).nbytes
    if n <= size:
        return [frame]
    if isinstance(frame, pa.Buffer):
        return [frame.slice(at, min(size, n - at)) for at in range(0, n, size)]
    view = memoryview(frame)
    return [view[at:at + size] for at in range(0, n, size)]


def _frames_of(chunks: list[Any], room: int) -> list[Any]:
    """Frames of a stream: each large buffer alone (not copied), what lies
    between them joined; split into chunks when at most ``room`` frames (0:
    never)."""
    big = [isinstance(c, pa.Buffer) and c.size >= OWN_FRAME_MIN for c in chunks]
    if sum(big) > MAX_OWN_FRAMES:
        big = [False] * len(big)
    frames: list[Any] = []
    small: list[bytes] = []
    for chunk, alone in zip(chunks, big, strict=True):
        if not alone:
            small.append(chunk.to_pybytes() if isinstance(chunk, pa.Buffer) else bytes(chunk))
            continue
        if small:
            frames.append(b"".join(small))
            small = []
        frames.append(chunk)
    if small or not frames:
        frames.append(b"".join(small))
    if room <= len(frames):
        return frames
    size = chunk_size(sum(memoryview(f).nbytes for f in frames))
    pieces = [piece for frame in frames for piece in _split(frame, size)]
    return pieces if len(pieces) <= room else frames


def _holds_float64(t: pa.DataType) -> bool:
    if pa.types.is_float64(t):
        return True
    if pa.types.is_dictionary(t):
        return _holds_float64(t.value_type)
    if isinstance(t, pa.ExtensionType):
        return _holds_float64(t.storage_type)
    return any(_holds_float64(t.field(i).type) for i in range(t.num_fields))


def _float64_values(table: pa.Table | pa.RecordBatch) -> list[np.ndarray] | None:
    """The bits of ``table``'s float64 columns (null slots included), or None
    when float64 values sit inside a nested column."""
    values = []
    for column in table.columns:
        if not pa.types.is_float64(column.type):
            if _holds_float64(column.type):
                return None
            continue
        for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
            data = chunk.buffers()[1]
            if data is not None and len(chunk):
                values.append(np.frombuffer(data, np.uint64, len(chunk), chunk.offset * 8))
    return values


def _free_of_r_na(values: list[np.ndarray]) -> bool:
    na = np.uint64(REAL_NA_BITS)
    for v in values:
        for at in range(0, len(v), _CHECK_STEP):
            if (v[at:at + _CHECK_STEP] == na).any():
                return False
    return True


class DoublesCheck:
    """Whether no double of a table has R's NA bit pattern, which the worker
    would otherwise look for itself (SPEC §8a, ``doubles_checked``). Large
    arrays of doubles are checked in a thread, alongside the payload's write
    (numpy releases the GIL as it compares): this client's arrays usually sit
    in huge pages, which it reads several times faster than the worker reads
    the payload's fresh shared pages. Smaller ones are left to the worker."""

    def __init__(self, table: pa.Table | pa.RecordBatch) -> None:
        # short columns cannot make arrays big enough: not even a look at each
        values = _float64_values(table) if table.num_rows * 8 >= _CHECK_ARRAY_MIN else None
        size = sum(v.nbytes for v in values) if values else 0
        self._clean = False
        self._thread: threading.Thread | None = None
        if values and size >= _CHECK_MIN and size >= _CHECK_ARRAY_MIN * len(values):
            self._thread = threading.Thread(target=self._run, args=(values,), name="rbridge-na-check", daemon=True)
            self._thread.start()

    def _run(self, values: list[np.ndarray]) -> None:
        self._clean = _free_of_r_na(values)

    def result(self) -> bool:
        """True when the doubles were checked and none has R's NA bit pattern."""
        if self._thread is None:
            return False
        self._thread.join()
        return self._clean


class PayloadWriter:
    """Collects the payloads of one outgoing message. ``frames`` go after the
    envelope; ``segments`` must be unlinked once the message's reply is in
    (the worker unlinks them as it reads them; this covers the case where it
    never does). With ``arenas``, large payloads go through shared memory;
    with ``chunks``, frames of large payloads are split into chunks."""

    def __init__(self, arenas: ArenaWriter | None, chunks: bool = False) -> None:
        self.arenas = arenas
        self.chunks = chunks
        self.frames: list[Any] = []
        self.segments: list[str] = []
        self.regions: list[tuple[Any, int]] = []   # (arena, slot) handed over
        self._checks: list[bool] = []

    @property
    def doubles_checked(self) -> bool:
        """Whether the message may say ``doubles_checked`` (SPEC §8a): it has
        payloads, and none of their doubles has R's NA bit pattern."""
        return bool(self._checks) and all(self._checks)

    def add(self, table: pa.Table | pa.RecordBatch) -> msgpack.ExtType:
        """Serializes ``table`` and returns the ext value that refers to it."""
        chunks = _stream_chunks(table)
        check = DoublesCheck(table)
        try:
            return self._add(chunks)
        finally:
            self._checks.append(check.result())

    def _add(self, chunks: list[Any]) -> msgpack.ExtType:
        if self.arenas is not None:
            size = sum(memoryview(c).nbytes for c in chunks)
            if size >= SHM_MIN:
                try:
                    return self._add_region(chunks, size) or self._add_segment(chunks, size)
                except OSError:   # /dev/shm full or too small (64 MB in a default container)
                    pass          # the payload travels as frames instead
        first = len(self.frames) + 1
        self.frames.extend(_frames_of(chunks, MAX_FRAMES - first if self.chunks else 0))
        count = len(self.frames) - first + 1
        if count == 1:
            return msgpack.ExtType(EXT_PAYLOAD, b"f" + struct.pack("<I", first))
        return msgpack.ExtType(EXT_PAYLOAD, b"F" + struct.pack("<II", first, count))

    def _add_region(self, chunks: list[Any], size: int) -> msgpack.ExtType | None:
        assert self.arenas is not None
        spot = self.arenas.allocate(size)
        if spot is None:
            return None
        arena, slot, offset = spot
        try:
            arena.write(offset, size, chunks)
        except BaseException:
            self.arenas.release(arena, slot)
            raise
        self.regions.append((arena, slot))
        if not arena.announced:   # the worker unlinks the name once mapped; so do we, after the reply
            arena.announced = True
            self.segments.append(arena.name)
        return msgpack.ExtType(EXT_PAYLOAD, b"a" + struct.pack("<QQI", offset, size, slot) + arena.name.encode())

    def _add_segment(self, chunks: list[Any], size: int) -> msgpack.ExtType:
        name, mm = _create_mapped(size)
        self.segments.append(name)
        try:
            with memoryview(mm) as view:
                copy_into(chunks, view)
        finally:
            mm.close()
        return msgpack.ExtType(EXT_PAYLOAD, b"m" + struct.pack("<Q", size) + name.encode())

    def discard(self, sent: bool = True) -> None:
        """Drops the payloads; regions never sent go back to their arena."""
        for name in self.segments:
            unlink_segment(name)
        if not sent and self.arenas is not None:
            for arena, slot in self.regions:
                self.arenas.release(arena, slot)
        self.segments.clear()
        self.frames.clear()
        self.regions.clear()
        self._checks.clear()


def open_segment(name: str, size: int = 0) -> int:
    """A file descriptor of a segment the worker made, checked to be private
    and at least ``size`` bytes, and unlinked: the mapping keeps the memory."""
    m = _NAME.fullmatch(name)
    if not m or m.group(1) != "w":
        raise ProtocolError(f"invalid shared-memory segment name {name!r}")
    try:
        fd = os.open(_path(name), os.O_RDWR | os.O_NOFOLLOW)
    except OSError as exc:
        raise ProtocolError(f"cannot open shared-memory payload {name}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
                or st.st_size < size):
            raise ProtocolError(f"shared-memory payload {name} is not a private segment of {size} bytes")
    except BaseException:
        os.close(fd)
        raise
    finally:
        try:
            os.unlink(_path(name))     # promptly: the mapping keeps the memory
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    return fd


def _map_segment(name: str, size: int) -> pa.Buffer:
    fd = open_segment(name, size)
    try:
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) if size else b""
    finally:
        os.close(fd)
    return pa.py_buffer(mm)


def _frame_buffer(frame: Any) -> Any:
    return frame.buffer if hasattr(frame, "buffer") else frame


def read_payload(ref: bytes, frames: list[Any], arenas: ArenaReader | None = None) -> pa.Table:
    """The Arrow table an ext 3 value refers to, read without copying (except
    a stream split over several frames, which is joined)."""
    kind = ref[:1]
    if (kind == b"f" and len(ref) == 5) or (kind == b"F" and len(ref) == 9):
        index, count = (struct.unpack("<I", ref[1:])[0], 1) if kind == b"f" else struct.unpack("<II", ref[1:])
        if not (index >= 1 and count >= 1 and index + count - 1 <= len(frames)):
            raise ProtocolError(f"payload refers to frames {index}..{index + count - 1}, "
                                f"but the message has {len(frames)}")
        parts = [_frame_buffer(f) for f in frames[index - 1:index - 1 + count]]
        buf = pa.py_buffer(parts[0] if count == 1 else b"".join(parts))
    elif kind == b"a" and len(ref) > 21 and arenas is not None:
        offset, size, slot = struct.unpack("<QQI", ref[1:21])
        buf = arenas.region(ref[21:].decode("ascii", errors="replace"), offset, size, slot)
    elif kind == b"m" and len(ref) > 9:
        (size,) = struct.unpack("<Q", ref[1:9])
        buf = _map_segment(ref[9:].decode("ascii", errors="replace"), size)
    else:
        raise ProtocolError("malformed payload reference")
    try:
        return pa.ipc.open_stream(buf).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProtocolError(f"undecodable Arrow payload from the worker: {exc}") from exc
