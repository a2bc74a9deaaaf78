"""Arrow payloads on the wire: binary frames, or shared memory on one host.

A payload is one Arrow IPC stream. The envelope refers to it with an ext 3
value (``protocol/SPEC.md``, "Arrow payloads"): ``b"f"`` + u32 frame number,
or ``b"m"`` + u64 length + the name of a POSIX shared-memory segment. Segments
are private (mode 0600), unguessably named ``/rbridge-<c|w><pid>-<32 hex>``,
unlinked by the receiver as soon as it has mapped them, and swept at start-up
when their creator has died.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
import stat
import struct
from typing import Any

import msgpack
import pyarrow as pa

from ._errors import ProtocolError

EXT_PAYLOAD = 3
#: Payloads at least this big go through shared memory when the worker can.
SHM_MIN = 1 << 20
#: pyzmq copies smaller frames anyway (zmq.COPY_THRESHOLD).
ZERO_COPY_MIN = 1 << 16
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
            unlink_segment("/" + entry)
            removed += 1
    return removed


def _create_segment(size: int) -> tuple[str, mmap.mmap]:
    name = f"/rbridge-c{os.getpid()}-{secrets.token_hex(16)}"
    fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size) if size else mmap.mmap(-1, 1)
    except BaseException:
        os.close(fd)
        unlink_segment(name)
        raise
    os.close(fd)
    return name, mm


def make_probe() -> tuple[str, bytes]:
    """A small segment holding a random token, for the worker to read back
    during the handshake: proof that both sides see the same segments."""
    token = secrets.token_bytes(16)
    name, mm = _create_segment(len(token))
    mm.write(token)
    mm.close()
    return name, token


def _write_stream(table: pa.Table | pa.RecordBatch, sink: Any) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)   # a RecordBatch keeps its row count even without columns


class PayloadWriter:
    """Collects the payloads of one outgoing message. ``frames`` go after the
    envelope; ``segments`` must be unlinked once the message's reply is in
    (the worker unlinks them as it reads them; this covers the case where it
    never does)."""

    def __init__(self, shm: bool) -> None:
        self.shm = shm
        self.frames: list[pa.Buffer] = []
        self.segments: list[str] = []

    def add(self, table: pa.Table | pa.RecordBatch) -> msgpack.ExtType:
        """Serializes ``table`` and returns the ext value that refers to it."""
        if self.shm:
            mock = pa.MockOutputStream()
            _write_stream(table, mock)
            size = mock.size()
            if size >= SHM_MIN:
                return self._add_segment(table, size)
        sink = pa.BufferOutputStream()
        _write_stream(table, sink)
        self.frames.append(sink.getvalue())
        return msgpack.ExtType(EXT_PAYLOAD, b"f" + struct.pack("<I", len(self.frames)))

    def _add_segment(self, table: pa.Table | pa.RecordBatch, size: int) -> msgpack.ExtType:
        name, mm = _create_segment(size)
        self.segments.append(name)
        try:
            buf = pa.py_buffer(mm)
            _write_stream(table, pa.FixedSizeBufferWriter(buf))
            del buf
        finally:
            mm.close()
        return msgpack.ExtType(EXT_PAYLOAD, b"m" + struct.pack("<Q", size) + name.encode())

    def discard(self) -> None:
        for name in self.segments:
            unlink_segment(name)
        self.segments.clear()
        self.frames.clear()


def _map_segment(name: str, size: int) -> pa.Buffer:
    m = _NAME.fullmatch(name)
    if not m or m.group(1) != "w":
        raise ProtocolError(f"invalid shared-memory segment name {name!r}")
    try:
        fd = os.open(_path(name), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ProtocolError(f"cannot open shared-memory payload {name}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
                or st.st_size < size):
            raise ProtocolError(f"shared-memory payload {name} is not a private segment of {size} bytes")
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) if size else b""
    finally:
        os.close(fd)
        try:
            os.unlink(_path(name))     # promptly: the mapping keeps the memory
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    return pa.py_buffer(mm)


def read_payload(ref: bytes, frames: list[Any]) -> pa.Table:
    """The Arrow table an ext 3 value refers to, read without copying."""
    if len(ref) == 5 and ref[:1] == b"f":
        (index,) = struct.unpack("<I", ref[1:])
        if not 1 <= index <= len(frames):
            raise ProtocolError(f"payload refers to frame {index}, but the message has {len(frames)}")
        frame = frames[index - 1]
        buf = pa.py_buffer(frame.buffer if hasattr(frame, "buffer") else frame)
    elif len(ref) > 9 and ref[:1] == b"m":
        (size,) = struct.unpack("<Q", ref[1:9])
        buf = _map_segment(ref[9:].decode("ascii", errors="replace"), size)
    else:
        raise ProtocolError("malformed payload reference")
    try:
        return pa.ipc.open_stream(buf).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProtocolError(f"undecodable Arrow payload from the worker: {exc}") from exc
