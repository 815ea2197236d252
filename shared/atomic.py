"""Atomic writes: a reader sees the old file/folder or the new one, never half of one.

Write into a temporary sibling, flush, then `os.replace` it into place. For
folders (a whole MEDS dataset, a checkpoint) the temporary sibling is renamed
over the destination only when everything inside it is complete.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), mode=mode)


OUTPUT_MARKER = ".fedehr-output.json"  # written into every output folder a command owns


def check_output(dest: str | os.PathLike, *, kind: str, overwrite: bool,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse, before any work, an output folder the command may not write or replace.

    `dest` may not contain or lie inside one of the command's `inputs` (an import
    into its own source would delete the source). An existing `dest` is replaced
    only with `overwrite`, and only if it is a previous output of the same `kind`
    (its marker says so) holding nothing but what that command wrote.
    """
    from fedehr.shared.errors import DataError

    dest = Path(dest)
    refuse_overlap(dest, inputs)
    if not dest.exists() and not dest.is_symlink():
        return
    if not overwrite:
        raise DataError("destination already exists", where=str(dest),
                        fix="choose a new output folder or pass --overwrite")
    written = _marker_entries(dest, kind)
    foreign = sorted(set(os.listdir(dest)) - written - {OUTPUT_MARKER})
    if foreign:
        raise DataError(f"--overwrite would delete files this command did not write: "
                        f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}",
                        where=str(dest), fix="move them out of the folder, or choose a new one")


def refuse_overlap(dest: Path, inputs: Iterable[str | os.PathLike | None], *,
                   inside_only: bool = False) -> None:
    """DataError if `dest` is, lies inside, or (unless `inside_only`) contains an input."""
    from fedehr.shared.errors import DataError

    target = Path(dest).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        contains = source.is_relative_to(target) and not inside_only
        if contains or target.is_relative_to(source):
            raise DataError(f"the output {dest} overlaps the input {given}", where=str(dest),
                            fix="write the output outside every input")


def _marker_entries(dest: Path, kind: str) -> set[str]:
    """The names a previous run wrote into `dest`; DataError unless it was a `kind` output."""
    import json

    from fedehr.shared.errors import DataError

    refuse = DataError(f"not a {kind} written by fedehr (no {OUTPUT_MARKER} of that kind), "
                       "so --overwrite will not delete it", where=str(dest),
                       fix="choose a new output folder, or delete this one yourself")
    if dest.is_symlink() or not dest.is_dir():
        raise refuse
    try:
        marker = json.loads((dest / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise refuse from None
    entries = marker.get("entries") if isinstance(marker, dict) else None
    if marker.get("kind") != kind or not isinstance(entries, list) \
            or not all(isinstance(e, str) for e in entries):
        raise refuse
    return set(entries)


@contextlib.contextmanager
def _exclusive(dest: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside `dest`: one writer of `dest` at a time; a second one is
    refused at once, or with `wait` (a cache two commands may fill) waits its turn."""
    import fcntl

    from fedehr.shared.errors import DataError

    lock = dest.with_name(f".{dest.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataError("another command is writing this folder now", where=str(dest),
                            fix="wait for it to finish, or choose another output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file the previous holder unlinked while we waited
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _remove_leftovers(dest: Path) -> None:
    """Staging and old copies of `dest` that a killed run left behind (they may hold
    patient data). Called under the lock, so no live run owns them."""
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*"):
        if stale.name.endswith(".staging") or stale.name == f".{dest.name}.old":
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(dest: str | os.PathLike, *, overwrite: bool = False, kind: str | None = None,
                     inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield an empty staging folder that replaces `dest` only if the block succeeds.

    On any exception the staging folder is removed and `dest` is untouched, and staging
    folders a killed run left beside `dest` are removed. With a
    `kind` (what the folder is, e.g. "MEDS dataset") the output is owned: `check_output`
    guards it, one writer at a time holds it, leftovers of a killed run are removed, and
    a marker listing what was written lets a later --overwrite recognise it.
    """
    dest = Path(dest)
    if kind is None:
        if dest.exists() and not overwrite:
            from fedehr.shared.errors import DataError

            raise DataError("destination already exists", where=str(dest),
                            fix="choose a new output folder or pass --overwrite")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(dest, wait=True):  # a cache two commands may fill: take turns
            _remove_leftovers(dest)
            with _staged(dest) as staging:
                yield staging
        return
    check_output(dest, kind=kind, overwrite=overwrite, inputs=inputs)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        check_output(dest, kind=kind, overwrite=overwrite, inputs=inputs)  # under the lock
        _remove_leftovers(dest)
        with _staged(dest, kind=kind) as staging:
            yield staging


@contextlib.contextmanager
def _staged(dest: Path, kind: str | None = None) -> Iterator[Path]:
    import json

    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".staging", dir=dest.parent))
    try:
        yield staging
        if kind is not None:
            entries = sorted(os.listdir(staging))
            write_text(staging / OUTPUT_MARKER, json.dumps({"kind": kind, "entries": entries}))
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; a dataset is a normal folder
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(staging, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
