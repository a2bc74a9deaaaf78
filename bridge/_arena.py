"""Shared-memory arenas: long-lived segments in which payloads are written and
read in place (``protocol/SPEC.md``, "Arenas").

A fresh segment per payload costs a page fault per 4 KiB on both sides, which
for 80 MB is slower than the socket. An arena's pages are faulted in once and
then reused. Layout: a 4096-byte header (magic, then one u32 state per slot at
offset 64), then the data. The writer sets a slot's state to 1 when it hands a
region over; the reader sets it back to 0 when it is done. The client writes
into its own arenas (:class:`ArenaWriter`) and reads the worker's in place
(:class:`ArenaReader`): a pyarrow buffer over the region keeps a lease, and the
region goes back to the worker when the last array using it is freed.

Pages an arena has never held are written through its file, not its mapping:
the kernel then allocates them without a page fault each in this process, which
halves the cost of a session's first large transfer. Before they are first
written through the mapping, one byte of each is read: the kernel maps pages
in sixteen to a read fault, but one to a write fault. Only the bytes below
``Arena.reserved`` are known to exist, and only those are written through the
mapping (a write to a page that tmpfs cannot allocate would be a SIGBUS).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ._errors import ProtocolError

HEADER = 4096
STATES = 64
SLOTS = 64
MAGIC = b"RBARENA1"
ALIGN = 64
MIN_CAPACITY = 64 << 20
#: All of one session's arenas together; past this, payloads use one-off segments.
MAX_TOTAL = 1 << 30
#: The most a session reserves ahead on each side (``connect(shm_reserve=)``),
#: which is also the largest payload the worker's arena takes.
RESERVE_MAX = 1 << 29
#: Linux 5.14+: allocate and map a range's pages in one call (Python's mmap
#: module does not name it).
MADV_POPULATE_WRITE = 23


def _state_offset(slot: int) -> int:
    return STATES + 4 * slot


@dataclass
class _Region:
    offset: int
    length: int


def copy_into(chunks: list[Any], dest: memoryview) -> None:
    """Copies buffers one after another into ``dest``."""
    at = 0
    for chunk in chunks:
        data = memoryview(chunk).cast("B")
        dest[at:at + data.nbytes] = data
        at += data.nbytes


def _pwrite_all(fd: int, chunks: list[Any], at: int) -> None:
    for chunk in chunks:
        data = memoryview(chunk).cast("B")
        while data.nbytes:
            done = os.pwrite(fd, data, at)
            data, at = data[done:], at + done


@dataclass
class Arena:
    """One arena this client writes into."""

    name: str
    fd: int                     # the segment, kept open to write fresh pages through
    mm: mmap.mmap
    reserved: int = HEADER      # bytes [0, reserved) exist in the segment
    mapped: int = HEADER        # bytes [0, mapped) are mapped in here
    regions: dict[int, _Region] = field(default_factory=dict)   # slot -> region handed over
    announced: bool = False     # the worker has been sent its name

    def write(self, offset: int, size: int, chunks: list[Any]) -> None:
        """Writes ``chunks`` (``size`` bytes in all) one after another at
        ``offset``: fresh pages through the file, the others through the
        mapping (see the module)."""
        end = offset + size
        if end > self.reserved:
            if offset > self.reserved:   # alignment padding between regions
                os.posix_fallocate(self.fd, self.reserved, offset - self.reserved)
            _pwrite_all(self.fd, chunks, offset)   # OSError (ENOSPC) when /dev/shm is full
            self.reserved = end
            return
        with memoryview(self.mm) as view:
            if end > self.mapped:   # written through the file before: see the module
                bytes(view[self.mapped:end:mmap.PAGESIZE])
                self.mapped = end
            copy_into(chunks, view[offset:end])

    def prefault(self, end: int) -> None:
        """Allocates bytes [reserved, end) and maps them in here, in two calls
        instead of a fault per page. OSError when /dev/shm has no room."""
        os.posix_fallocate(self.fd, self.reserved, end - self.reserved)
        self.reserved = end
        start = self.mapped // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            self.mm.madvise(MADV_POPULATE_WRITE, start, end - start)
        except OSError:   # Linux < 5.14: mapped on first touch, as written
            return
        self.mapped = end

    def reclaim(self) -> int:
        """Takes back the regions the worker released; returns how many are out."""
        for slot in [s for s in self.regions if struct.unpack_from("<I", self.mm, _state_offset(s))[0] == 0]:
            del self.regions[slot]
        return len(self.regions)

    def allocate(self, length: int) -> tuple[int, int] | None:
        """A free region of ``length`` bytes, first fit, handed over at once:
        (slot, offset), or None."""
        self.reclaim()
        free = next((s for s in range(SLOTS) if s not in self.regions), None)
        if free is None:
            return None
        at = HEADER
        for region in sorted(self.regions.values(), key=lambda r: r.offset) + [_Region(len(self.mm), 0)]:
            if region.offset >= at and region.offset - at >= length:
                self.regions[free] = _Region(at, length)
                struct.pack_into("<I", self.mm, _state_offset(free), 1)
                return free, at
            at = max(at, -(-(region.offset + region.length) // ALIGN) * ALIGN)
        return None

    def release(self, slot: int) -> None:
        """Takes back a region that was never sent."""
        self.regions.pop(slot, None)
        struct.pack_into("<I", self.mm, _state_offset(slot), 0)

    def close(self) -> None:
        os.close(self.fd)
        try:
            self.mm.close()
        except BufferError:    # a write still holds a view; the mapping goes with it
            pass


class ArenaWriter:
    """The client's arenas for payloads it sends, reused across requests."""

    def __init__(self, create: Callable[[int, int], tuple[str, int, mmap.mmap]],
                 unlink: Callable[[str], None]) -> None:
        self._create = create     # (size, bytes to reserve) -> (name, fd, mmap): a new private segment
        self._unlink = unlink
        self.arenas: list[Arena] = []
        self.reserved = 0         # bytes reserved ahead (reserve)
        self._lock = threading.Lock()   # threads of one session send payloads concurrently

    def reserve(self, nbytes: int) -> int:
        """Makes an arena whose first ``nbytes`` of data are allocated and
        mapped now, so that the first payloads do not pay for fresh pages.
        Returns the bytes reserved: 0 when /dev/shm has no room for them
        (payloads then take the usual path)."""
        with self._lock:
            arena = self._new_arena(nbytes) if 0 < nbytes <= RESERVE_MAX else None
            if arena is None:
                return 0
            try:
                arena.prefault(min(len(arena.mm), HEADER + -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE))
            except OSError:
                self.arenas.remove(arena)
                arena.close()
                self._unlink(arena.name)
                return 0
            self.reserved += nbytes
            return nbytes

    def allocate(self, length: int) -> tuple[Arena, int, int] | None:
        """A region for ``length`` bytes: (arena, slot, offset), or None when
        no arena can hold it (the caller then uses a one-off segment)."""
        with self._lock:
            return self._allocate(length)

    def release(self, arena: Arena, slot: int) -> None:
        """Takes back a region that was never sent."""
        with self._lock:
            arena.release(slot)

    def _allocate(self, length: int) -> tuple[Arena, int, int] | None:
        for arena in self.arenas:
            spot = arena.allocate(length)
            if spot is not None:
                return (arena, *spot)
        # Another arena: the worker may still hold regions of the others (its
        # views live until R's garbage collector frees them). The worker keeps
        # every arena mapped for the session, so they are not retired early.
        arena = self._new_arena(length)
        spot = None if arena is None else arena.allocate(length)
        return None if spot is None else (arena, *spot)

    def _new_arena(self, length: int) -> Arena | None:
        """A new arena with room for ``length`` bytes, or None (past MAX_TOTAL,
        or no segment can be made)."""
        capacity = max(MIN_CAPACITY, -(-(length + ALIGN) // (1 << 20)) * (1 << 20))
        if sum(len(a.mm) for a in self.arenas) + HEADER + capacity > MAX_TOTAL:
            return None
        try:
            name, fd, mm = self._create(HEADER + capacity, HEADER)
        except OSError:
            return None
        mm[:len(MAGIC)] = MAGIC
        arena = Arena(name, fd, mm)
        self.arenas.append(arena)
        return arena

    def regions_out(self) -> int:
        """Regions handed to the worker that it has not given back yet."""
        with self._lock:
            return sum(arena.reclaim() for arena in self.arenas)

    def close(self) -> None:
        with self._lock:
            for arena in self.arenas:
                arena.close()
            self.arenas.clear()


class _Lease:
    """Held by the pyarrow buffer over a region: frees the region when the last
    array that uses it goes away."""

    __slots__ = ("mapped", "slot")

    def __init__(self, mapped: _Mapped, slot: int) -> None:
        self.mapped = mapped
        self.slot = slot

    def __del__(self) -> None:
        self.mapped.release(self.slot)


class _Mapped:
    """A worker's arena, mapped by this client."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self.view = np.frombuffer(mm, dtype=np.uint8)   # for addresses; keeps the mapping
        self.address = self.view.ctypes.data

    def release(self, slot: int) -> None:
        try:
            struct.pack_into("<I", self.mm, _state_offset(slot), 0)
        except ValueError:   # unmapped at interpreter exit: nobody is left to take it back
            pass


class ArenaReader:
    """The worker's arenas this client has mapped, by name. The worker has one
    per client and replaces it only when it grows, so only the newest few are
    kept here; an older one is unmapped when its last lease goes."""

    KEEP = 4


    def __init__(self, open_segment: Callable[[str], int]) -> None:
        self._open = open_segment   # name -> fd of a checked private segment, now unlinked
        self.mapped: dict[str, _Mapped] = {}

    def map(self, name: str) -> _Mapped:
        """The arena of that name, mapped on first sight (which unlinks its name)."""
        mapped = self.mapped.get(name)
        if mapped is not None:
            return mapped
        fd = self._open(name)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER:
                raise ProtocolError(f"shared-memory arena {name} is too small")
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        if mm[:len(MAGIC)] != MAGIC:
            mm.close()
            raise ProtocolError(f"shared-memory segment {name} is not an arena")
        mapped = self.mapped[name] = _Mapped(mm)
        while len(self.mapped) > self.KEEP:
            del self.mapped[next(iter(self.mapped))]
        return mapped

    def region(self, name: str, offset: int, length: int, slot: int) -> pa.Buffer:
        mapped = self.map(name)
        if not (0 <= slot < SLOTS and HEADER <= offset <= len(mapped.mm) and 0 <= length <= len(mapped.mm) - offset):
            raise ProtocolError(f"payload region outside shared-memory arena {name}")
        return pa.foreign_buffer(mapped.address + offset, length, base=_Lease(mapped, slot))

    def close(self) -> None:
        """Forgets the mappings; each is unmapped when the last array using it is freed."""
        self.mapped.clear()
