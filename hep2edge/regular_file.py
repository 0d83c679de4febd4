"""Reading an input file once: regular files only, never blocking on a FIFO or device, optionally confined.

The bytes returned are the ones hashed and decoded, so a file swapped between a check and a use cannot pair one
file's hash with another's pixels; the containment check is made on the opened descriptor, not on the name.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hep2edge.errors import ImageReadError

READ_CHUNK = 1 << 20
_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class OversizeFileError(ImageReadError):
    """The file is over the byte limit; `content_hash` (sha256, streamed) lets a journal remember the refusal."""

    def __init__(self, message: str, content_hash: str) -> None:
        super().__init__(message)
        self.content_hash = content_hash


Signature = tuple[int, int]  # (size in bytes, mtime in ns): a file unchanged since it was last seen


def signature_of(info: os.stat_result) -> Signature:
    return info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class FileBytes:
    """A file's whole content and the signature (size, mtime in ns) of the descriptor it was read from."""

    data: bytes
    signature: Signature

    @property
    def mtime_ns(self) -> int:
        return self.signature[1]


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a folder', ... for a non-regular st_mode."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _check_inside(path: Path, fd: int, root: Path) -> None:
    """The opened file must be the one at the real location of `path`, and that location inside `root`."""
    real = Path(os.path.realpath(path))
    try:
        same = os.stat(real)
    except OSError:
        same = None
    opened = os.fstat(fd)
    if not real.is_relative_to(root) or same is None or (same.st_dev, same.st_ino) != (opened.st_dev, opened.st_ino):
        raise ImageReadError(f"{path}: resolves outside the watched folder {root}; not read")


def _stream_hash(fd: int) -> str:
    digest = hashlib.sha256()
    while block := os.read(fd, READ_CHUNK):
        digest.update(block)
    return digest.hexdigest()


def _read_all(fd: int, path: Path, limit: int) -> bytes:
    chunks, total = [], 0
    while block := os.read(fd, READ_CHUNK):
        chunks.append(block)
        total += len(block)
        if total > limit:
            raise ImageReadError(f"{path}: file is over the limit of {limit:,} bytes")
    return b"".join(chunks)


def read_regular_file(path: Path, max_bytes: int, root: Path | None = None) -> FileBytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes` (inside `root` when given).

    Opened non-blocking, so a FIFO or device named like an image is refused at once instead of blocking.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{path}: is a folder, not an image") from exc
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = file_kind(info.st_mode)
            raise ImageReadError(f"{path}: is {kind}, not an image file; only regular files are read")
        if root is not None:
            _check_inside(path, fd, root)
        if info.st_size > max_bytes:
            raise OversizeFileError(f"{path}: file is {info.st_size:,} bytes, over the limit of {max_bytes:,}",
                                    _stream_hash(fd))
        data = _read_all(fd, path, max_bytes)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    return FileBytes(data, signature_of(info))
