"""A checkpoint folder as one deterministic tar stream, readable from any offset.

The registry sends a checkpoint as the bytes of a POSIX ustar archive of its
folder. The archive is built from the files on the fly, never written to disk,
and is byte-for-byte the same on every call (members sorted by name, mode
0644, owner 0/0, mtime 0), so a pull interrupted at byte N resumes by asking
for the stream from N, and the SHA-256 of the whole stream identifies it.

`extract` is the receiving side: it accepts only what a checkpoint holds
(regular files with plain names, no links, no folders, no paths), so a
hostile stream cannot write outside the destination.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedehr.shared.errors import FedEHRError

BLOCK = tarfile.BLOCKSIZE  # 512
CHUNK = 1 << 20  # bytes per message: well under gRPC's 4 MiB default limit
MAX_MEMBERS = 32


class StreamError(FedEHRError):
    """A checkpoint stream is malformed, altered or not what was announced."""

    exit_code = 4


@dataclass(frozen=True)
class _Member:
    header: bytes
    path: Path
    size: int

    @property
    def padded(self) -> int:
        return len(self.header) + self.size + (-self.size) % BLOCK


class TarStream:
    """The tar stream of the regular files directly inside `folder`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.members: list[_Member] = []
        for path in sorted(p for p in self.folder.iterdir() if not p.name.startswith(".")):
            if not path.is_file() or path.is_symlink():
                continue
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
            info.uname = info.gname = ""
            header = info.tobuf(format=tarfile.USTAR_FORMAT)
            self.members.append(_Member(header, path, info.size))
        self.trailer = bytes(2 * BLOCK)
        self.size = sum(m.padded for m in self.members) + len(self.trailer)

    def iter_bytes(self, offset: int = 0, chunk: int = CHUNK) -> Iterator[bytes]:
        """The stream from `offset` on, in pieces of at most `chunk` bytes."""
        if not 0 <= offset <= self.size:
            raise StreamError(f"offset {offset} is outside the stream (size {self.size})")
        buffer = bytearray()
        for piece in self._segments(offset):
            buffer += piece
            while len(buffer) >= chunk:
                yield bytes(buffer[:chunk])
                del buffer[:chunk]
        if buffer:
            yield bytes(buffer)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for piece in self.iter_bytes():
            digest.update(piece)
        return digest.hexdigest()

    def fingerprint(self) -> tuple:
        """What identifies the stream's content cheaply: names, sizes, mtimes, inodes."""
        return tuple((m.path.name, m.size, m.path.stat().st_mtime_ns, m.path.stat().st_ino)
                     for m in self.members)

    def _segments(self, offset: int) -> Iterator[bytes]:
        position = 0
        for member in self.members:
            end = position + member.padded
            if end <= offset:
                position = end
                continue
            yield from _skip(member.header, offset - position)
            position += len(member.header)
            start = max(0, offset - position)
            with open(member.path, "rb") as fh:
                fh.seek(start)
                remaining = member.size - start
                while remaining > 0:
                    data = fh.read(min(CHUNK, remaining))
                    if not data:
                        raise StreamError("a checkpoint file shrank while it was being sent",
                                          where=str(member.path), fix="pull again")
                    remaining -= len(data)
                    yield data
            position += member.size
            pad = (-member.size) % BLOCK
            yield from _skip(bytes(pad), offset - position)
            position += pad
        yield from _skip(self.trailer, offset - position)


def _skip(data: bytes, skip: int) -> Iterator[bytes]:
    piece = data[max(0, skip):]
    if piece:
        yield piece


def extract(archive: str | os.PathLike, dest: str | os.PathLike,
            allowed: tuple[str, ...] | None = None) -> list[str]:
    """Unpack a checkpoint tar into the existing folder `dest`; return the names.

    Refuses (StreamError) anything but regular files with plain names, and,
    with `allowed`, any name not in it.
    """
    dest = Path(dest)
    names: list[str] = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for info in tar:
                name = info.name
                if (not info.isreg() or "/" in name or "\\" in name or name in ("", ".", "..")
                        or name.startswith(".") or (allowed is not None and name not in allowed)
                        or name in names or len(names) >= MAX_MEMBERS):
                    raise StreamError(f"unexpected entry {name!r} in the checkpoint stream",
                                      where=str(archive),
                                      fix="the registry sent something that is not a "
                                      "checkpoint; do not use it")
                source = tar.extractfile(info)
                assert source is not None
                with source, open(dest / name, "wb") as out:
                    while data := source.read(CHUNK):
                        out.write(data)
                names.append(name)
    except tarfile.TarError as exc:
        raise StreamError(f"the checkpoint stream is not a valid archive ({exc})",
                          where=str(archive), fix="pull again") from exc
    return names
