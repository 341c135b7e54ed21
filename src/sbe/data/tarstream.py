"""Read an uncompressed tar in one sequential pass, never extracting anything to disk.

:class:`TarStream` yields each member with the byte offset of its data in the tar file, so a later
stage reads one image with a single ``seek`` + ``read`` instead of unpacking the archive again.
Offsets only exist in an uncompressed tar, so compressed archives are refused up front
(:func:`probe_tar`) with a message saying how to fix the input.

A damaged archive (truncated, or garbage where a header should be) ends the iteration early and
sets :attr:`TarStream.damage`; every member yielded before the damage is intact.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sbe.errors import SbeError

BLOCK = tarfile.BLOCKSIZE  # 512

#: Leading bytes of compressed streams, and the command that undoes each.
_COMPRESSED: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"BZh", "bzip2", "bunzip2"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\x5d\x00\x00", "lzma", "unlzma"),
)

_DRIVE = re.compile(r"[A-Za-z]:[/\\]")

MemberProblem = Literal["unsafe_member_path", "unsupported_member"]


class NotATarError(SbeError):
    """The input is not an uncompressed tar archive (the message says what it is instead)."""


class TarDamageError(OSError):
    """The archive ends (truncated or corrupt) inside the data of the member being read."""


def probe_tar(path: str | os.PathLike[str]) -> None:
    """Check cheaply (first 512 bytes) that ``path`` is an uncompressed tar.

    An archive with no members (only the end-of-archive zero blocks) passes.

    Raises:
        NotATarError: missing, empty, compressed, or not starting with a valid tar header.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(BLOCK)
    except FileNotFoundError:
        raise NotATarError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise NotATarError(f"{p}: is a directory, not a tar") from None
    except OSError as e:
        raise NotATarError(f"{p}: cannot read ({e.strerror or e})") from None
    if not head:
        raise NotATarError(f"{p}: empty file, not a tar archive")
    for magic, name, undo in _COMPRESSED:
        if head.startswith(magic):
            raise NotATarError(
                f"{p}: is a {name}-compressed file; ingest needs an uncompressed tar because it "
                f"records byte offsets into it (decompress it first, e.g. `{undo} -k {p.name}`)"
            )
    if len(head) < BLOCK:
        raise NotATarError(f"{p}: {len(head)} bytes, too short for a tar header")
    if head.count(0) == BLOCK:
        return  # an empty archive: end-of-archive marker first
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise NotATarError(f"{p}: not a tar archive (first header: {e})") from None


def is_safe_member_path(name: str) -> bool:
    """False for absolute paths (``/x``, ``C:/x``, ``\\\\x``) and any ``..`` component."""
    if not name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        return False
    return ".." not in name.replace("\\", "/").split("/")


def printable_name(name: str) -> str:
    """A member name safe to store as UTF-8 (undecodable bytes become ``\\xNN`` escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(slots=True)
class TarMember:
    """One archive member, as met in the stream.

    Attributes:
        name: the name stored in the archive (made printable; see :func:`printable_name`).
        path: normalised relative path for matching (``./a//b.jpg`` -> ``a/b.jpg``).
        offset: byte offset of the member's data in the tar file (``TarInfo.offset_data``).
        size: data size in bytes.
        problem: why the member is not readable as a regular file, or ``None``.
    """

    name: str
    path: str
    offset: int
    size: int
    problem: MemberProblem | None = None
    _read: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """The member's data. Only valid before the stream advances to the next member.

        Raises:
            TarDamageError: the archive ends inside this member's data; iteration then stops
                and :attr:`TarStream.damage` says where.
        """
        if self._read is None:
            raise ValueError(f"{self.name}: not a regular file ({self.problem})")
        return self._read()


class TarStream:
    """Iterate the members of an uncompressed tar in archive order, in one forward pass.

    Directories are passed over silently. Members with an absolute or ``..`` path, and links,
    devices, FIFOs and sparse files, are yielded with ``problem`` set and no data.

    Example:
        >>> stream = TarStream("0088.tar")
        >>> for m in stream:
        ...     if m.problem is None and m.path.endswith(".txt"):
        ...         text = m.read()
        >>> stream.damage  # None, or what ended the archive early

    Attributes:
        damage: after iteration, ``None`` if the archive ended with its end-of-archive marker,
            else a description of the truncation or corruption that ended it early.
        bytes_read: position reached in the file, in bytes.
    """

    def __init__(self, path: str | os.PathLike[str], *, bufsize: int = 1 << 16) -> None:
        self.path = Path(path)
        self.bufsize = bufsize
        self.damage: str | None = None
        self.bytes_read = 0

    def __iter__(self) -> Iterator[TarMember]:
        probe_tar(self.path)
        self.damage = None
        # Where the next header must start: the end of the last member's data (padded).
        expected_end = 0
        with open(self.path, "rb", buffering=0) as raw:
            try:
                tf = tarfile.open(  # noqa: SIM115 (closed by the `with tf` below)
                    fileobj=raw,
                    mode="r|",
                    bufsize=self.bufsize,
                    encoding="utf-8",
                    errors="surrogateescape",
                )
            except tarfile.ReadError as e:
                raise NotATarError(f"{self.path}: not a tar archive ({e})") from None
            with tf:
                while True:
                    try:
                        info = tf.next()
                    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
                        self.damage = f"archive damaged after byte {expected_end}: {e}"
                        break
                    if info is None:
                        self.damage = _end_problem(raw, expected_end)
                        break
                    # Stream mode keeps every TarInfo seen; we never look back, so drop them.
                    tf.members.clear()  # type: ignore[attr-defined]  # typeshed omits TarFile.members
                    expected_end = info.offset_data + _padded(info.size)
                    self.bytes_read = expected_end
                    member = self._member(tf, info)
                    if member is None:
                        continue
                    yield member
                    if self.damage is not None:  # set by a failed read() of this member
                        break

    def _member(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> TarMember | None:
        name = printable_name(info.name)
        path = posixpath.normpath(name) if name else name
        if not is_safe_member_path(info.name):
            return TarMember(name, path, info.offset_data, info.size, "unsafe_member_path")
        if info.isdir():
            return None
        if not info.isreg() or info.issparse():
            return TarMember(name, path, info.offset_data, info.size, "unsupported_member")

        def read() -> bytes:
            fh = tf.extractfile(info)
            assert fh is not None
            try:
                return fh.read()
            except (tarfile.TarError, OSError, EOFError) as e:
                self.damage = (
                    f"truncated inside member {name!r} (data at byte {info.offset_data}): {e}"
                )
                raise TarDamageError(self.damage) from None

        return TarMember(name, path, info.offset_data, info.size, None, read)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _end_problem(raw, offset: int) -> str | None:
    """``None`` if a zero block (end-of-archive marker) sits at ``offset``, else what is there.

    tarfile ends a stream silently on a truncated or invalid header once it is past the first
    member; this check turns that silence into a reported damage.
    """
    block = os.pread(raw.fileno(), BLOCK, offset)
    if len(block) == BLOCK and block.count(0) == BLOCK:
        return None
    if not block:
        return f"archive ends at byte {offset} without an end-of-archive marker (truncated)"
    if len(block) < BLOCK:
        return f"truncated header at byte {offset} ({len(block)} of {BLOCK} bytes)"
    return f"invalid header at byte {offset} (corrupt archive)"


class ImageReadError(OSError):
    """The bytes of an image could not be read (missing tar, short read, bad location)."""


def read_member(fd: int, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of an open tar: one positional read, no seek.

    Raises:
        ImageReadError: the location is invalid or the tar ends early.
    """
    if size <= 0 or offset < 0:
        raise ImageReadError(f"bad location offset={offset} size={size}")
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ImageReadError(f"tar ends early: {len(data)} of {size} bytes at offset {offset}")
    return data


def read_file(path: str | os.PathLike[str], size: int) -> bytes:
    """The bytes of a plain image file, checked against the size ingest recorded.

    Raises:
        ImageReadError: the file is missing, unreadable, or changed size since ingest.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ImageReadError(f"cannot read {path}: {e.strerror or e}") from None
    if size > 0 and len(data) != size:
        raise ImageReadError(f"{path}: {len(data)} bytes, ingest recorded {size} (file changed)")
    return data


def read_image(container: str | os.PathLike[str], member: str, offset: int, size: int) -> bytes:
    """One image by its ingest reference: a tar member (``container`` is a tar) or a plain file
    (``container`` is a folder and ``member`` the file's path inside it).

    Raises:
        ImageReadError: the image cannot be read.
    """
    if os.path.isdir(container):
        return read_file(os.path.join(container, member), size)
    return read_tar_member(container, offset, size)


def read_tar_member(tar_file: str | os.PathLike[str], offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of an uncompressed tar: one positional read, no extraction.

    Raises:
        ImageReadError: the tar is missing, the location is invalid or the tar ends early.
    """
    try:
        fd = os.open(tar_file, os.O_RDONLY)
    except OSError as e:
        raise ImageReadError(f"cannot open {tar_file}: {e.strerror}") from None
    try:
        return read_member(fd, offset, size)
    finally:
        os.close(fd)


class TarReader:
    """``read(i)``: the bytes of image i, by one ``os.pread`` on an open descriptor per tar.

    ``pread`` takes the offset itself, so threads share the descriptors without seeking.
    Picklable for decoder processes: a copy reopens the tars and closes them when collected.
    A container that is a folder (an image-folder source) is read file by file instead:
    ``members[i]`` is then image i's path inside it.

    Args:
        tar_file: per image, the ``tar_file`` it lives in (a key of ``paths``).
        offset, size: per image, the byte offset and size of its data in that tar.
        paths: ``tar_file`` value -> the tar's (or folder's) path on this machine.
        members: per image, its ``member_name`` (needed only when a container is a folder).

    Raises:
        SbeError: a ``tar_file`` has no path, or a folder container comes without members.
    """

    def __init__(
        self,
        tar_file: list[str],
        offset: np.ndarray,
        size: np.ndarray,
        paths: dict[str, str],
        members: list[str] | None = None,
    ) -> None:
        self.tar_file, self.offset, self.size = tar_file, offset, size
        self.members = members
        missing = sorted(set(tar_file) - set(paths))
        if missing:
            raise SbeError(f"no tar path known for tar_file {missing[0]!r}")
        self.paths = {name: paths[name] for name in set(tar_file)}
        self.folders = {name: p for name, p in self.paths.items() if os.path.isdir(p)}
        if self.folders and members is None:
            raise SbeError(f"{next(iter(self.folders.values()))} is a folder: members are needed")
        self._open()

    def _open(self) -> None:
        self.fds = {
            name: os.open(path, os.O_RDONLY)
            for name, path in self.paths.items()
            if name not in self.folders
        }

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "fds"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __del__(self) -> None:
        self.close()

    def __call__(self, i: int) -> bytes:
        name = self.tar_file[i]
        fd = self.fds.get(name)
        if fd is not None:
            return read_member(fd, int(self.offset[i]), int(self.size[i]))
        assert self.members is not None
        return read_file(os.path.join(self.folders[name], self.members[i]), int(self.size[i]))

    def close(self) -> None:
        for fd in getattr(self, "fds", {}).values():
            os.close(fd)
        self.fds = {}
