"""The arrays of a dataset file, and the binary files that hold them, read without RAM.

:data:`TARGETS` names the optional per-sample targets a dataset may hold
besides ``X`` and ``y``. An ``.npz`` archive's members and an ``.npy`` file
are known from their headers alone (:func:`npz_members`,
:func:`planned_bytes`): a header that does not match the file's size is
refused before anything is inflated. Uncompressed members are then
memory-mapped, compressed ones inflated ``CHUNK_BYTES`` at a time into an
unlinked scratch file (:func:`npz_arrays`), and mapped arrays of another
dtype converted to float32 the same way (:func:`as_float32`). The readers of
:mod:`corteza.wire.data_formats` build on these. Nothing here needs torch.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import struct
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from corteza.wire.errors import DataFileError, invalid_data

TARGETS = {"dendrite_target": 16, "coherence_target": 64}  # optional per-sample targets
CHUNK_BYTES = 64 << 20  # rows of a mapped file are checked or written this many bytes at a time
KEPT = ("X", "y", *TARGETS)  # the arrays of an .npz that are read; others are skipped


@dataclasses.dataclass(frozen=True)
class Member:
    """One ``.npy`` member of an ``.npz`` archive, as its header declares it."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]
    header_bytes: int  # the magic and header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def compressed(self) -> bool:
        return self.info.compress_type != zipfile.ZIP_STORED


# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 keeps the AST
# converter's recursion depth in state its threads share (gh-106905): two threads
# parsing at once can fail with "SystemError: AST constructor recursion depth mismatch".
# The server reads headers from several threads (uploads, jobs, listings): one at a time.
HEADER_LOCK = threading.Lock()


def read_npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of the .npy array ``fh`` is at; ValueError for a
    version numpy cannot read (or a header it cannot parse)."""
    version = np.lib.format.read_magic(fh)
    with HEADER_LOCK:
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy version {version}")


def load_mapped(path: Path) -> NDArray[Any]:
    """``np.load(path, mmap_mode="r")`` of a .npy file, its header read under the lock."""
    with HEADER_LOCK:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]


def npz_members(path: Path) -> dict[str, Member]:
    """The arrays an ``.npz`` holds (those of :data:`KEPT`), read from their headers alone.

    Nothing past a header is read, so a small archive that inflates to
    terabytes costs nothing here: each header's shape and dtype must add up to
    the member's declared size (``file_size``, where zipfile stops and checks
    the CRC), or the file is refused (``invalid_data``). What the arrays take
    once converted is then known before anything is inflated.
    """
    members: dict[str, Member] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if not info.filename.endswith(".npy") or name not in KEPT:
                    continue
                if info.flag_bits & 0x1:
                    raise invalid_data(f"{path} member {info.filename} is encrypted")
                with archive.open(info) as member:
                    shape, fortran, dtype = read_npy_header(member)
                    found = Member(info, tuple(shape), fortran, dtype, member.tell())
                if dtype.hasobject:
                    raise ValueError(
                        f"{info.filename} holds Python objects, which are never unpickled"
                    )
                if found.header_bytes + found.nbytes != info.file_size:
                    raise invalid_data(
                        f"{path} member {info.filename} declares shape {list(shape)} of "
                        f"{dtype} ({found.nbytes} bytes) but holds "
                        f"{info.file_size - found.header_bytes} bytes"
                    )
                members[name] = found
    except DataFileError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise invalid_data(f"{path} is not a readable .npz archive: {exc}") from exc
    return members


def npz_arrays(path: Path) -> dict[str, NDArray[Any]]:
    """The kept arrays: stored members memory-mapped, compressed ones inflated to disk."""
    arrays: dict[str, NDArray[Any]] = {}
    members = npz_members(path)
    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        for name, member in members.items():
            array = None if member.compressed else _map_member(path, raw, member.info)
            if array is None:
                array = _inflate(path, archive, member)
            arrays[name] = array
    return arrays


def _map_member(path: Path, raw: BinaryIO, info: zipfile.ZipInfo) -> NDArray[Any] | None:
    """A memory map of an uncompressed ``.npy`` member, or None when it cannot be mapped."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # 0x1: encrypted
        return None
    raw.seek(info.header_offset)
    local = raw.read(30)  # the local file header; its name and extra fields follow
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    raw.seek(start)
    try:
        shape, fortran, dtype = read_npy_header(raw)
    except ValueError:
        return None
    offset = raw.tell()
    size = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or size == 0 or offset - start + size > info.file_size:
        return None  # read_array refuses or reports these
    mapped: NDArray[Any] = np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )
    return mapped


def planned_bytes(path: Path, suffix: str) -> tuple[int, int] | None:
    """What storing a binary data file takes, from its headers alone; None for text formats.

    ``(converted, scratch)``: the bytes of its arrays as float32, and those
    written aside while reading it (compressed members inflated, other dtypes
    converted). A header that does not match the file's size is refused
    (``invalid_data``) before anything is inflated or allocated.
    """
    suffix = suffix.lower()
    members: Iterable[Member]
    if suffix == ".npz":
        members = npz_members(path).values()
    elif suffix == ".npy":
        members = [_npy_member(path)]
    else:
        return None
    converted = scratch = 0
    for member in members:
        as_float32 = math.prod(member.shape) * 4
        converted += as_float32
        scratch += member.nbytes if member.compressed else 0
        scratch += as_float32 if member.dtype != np.float32 else 0
    return converted, scratch


def _npy_member(path: Path) -> Member:
    """A ``.npy`` file's header, checked against the file's size."""
    try:
        with path.open("rb") as fh:
            shape, fortran, dtype = read_npy_header(fh)
            header = fh.tell()
    except (ValueError, EOFError) as exc:
        raise invalid_data(f"{path} is not a readable .npy file: {exc}") from exc
    info = zipfile.ZipInfo(path.name)
    info.file_size = path.stat().st_size
    member = Member(info, tuple(shape), fortran, dtype, header)
    if dtype.hasobject or header + member.nbytes != info.file_size:
        raise invalid_data(
            f"{path} declares shape {list(shape)} of {dtype} ({member.nbytes} bytes) but "
            f"holds {info.file_size - header} bytes"
        )
    return member


def _inflate(path: Path, archive: zipfile.ZipFile, member: Member) -> NDArray[Any]:
    """A compressed member inflated ``CHUNK_BYTES`` at a time into a scratch file, mapped."""
    order: Literal["F", "C"] = "F" if member.fortran else "C"
    if member.nbytes == 0:
        empty: NDArray[Any] = np.zeros(member.shape, dtype=member.dtype, order=order)
        return empty
    with scratch_file(path) as fh, archive.open(member.info) as source:
        source.seek(member.header_bytes)
        while block := source.read(CHUNK_BYTES):
            fh.write(block)
        if fh.tell() != member.nbytes:
            raise ValueError(f"{member.info.filename} ends early")
        fh.flush()
        inflated: NDArray[Any] = np.memmap(
            fh, dtype=member.dtype, mode="r", shape=member.shape, order=order
        )
    return inflated


def scratch_file(path: Path) -> Any:
    """An unlinked temporary file on the disk of ``path`` (else the temporary folder).

    A map of it outlives the file object; its space is freed with the map.
    """
    try:
        return tempfile.TemporaryFile(dir=path.parent)
    except OSError:
        return tempfile.TemporaryFile()


def as_float32(array: NDArray[Any], name: str, path: Path) -> NDArray[np.float32]:
    """Float32 as it is (a memory map stays one), other numbers converted once.

    A memory-mapped array of another dtype is converted ``CHUNK_BYTES`` at a
    time into a mapped scratch file, so RAM does not grow with the file.
    """
    if array.dtype == np.float32:
        return array
    if array.dtype.kind not in "biuf":
        raise invalid_data(f"{name} must hold numbers, got dtype {array.dtype}")
    if not _mapped(array) or array.ndim == 0 or len(array) == 0:
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused later
            return np.asarray(array, dtype=np.float32)
    with scratch_file(path) as fh:
        fh.truncate(array.size * 4)
        converted: NDArray[np.float32] = np.memmap(
            fh, dtype=np.float32, mode="r+", shape=array.shape
        )
    for rows in chunks(len(array), array[:1].nbytes):
        with np.errstate(over="ignore"):
            converted[rows] = array[rows]
    return converted


def _mapped(array: NDArray[Any]) -> bool:
    """Whether ``array`` is (a view of) a memory map."""
    base: Any = array
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def chunks(n: int, row_bytes: int) -> Iterable[slice]:
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))
