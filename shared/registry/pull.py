"""`pull`: fetch a signed checkpoint from the registry, resumably, and verify it.

The stream (a deterministic tar of the checkpoint folder, see stream.py) is
appended to ``OUT.partial``; ``OUT.partial.json`` remembers which round and
which stream (its SHA-256) the partial file belongs to. An interrupted pull
(Ctrl-C, a dropped connection) leaves both behind, and the next pull of the
same OUT resumes from the partial file's size; if the registry's checkpoint
changed meanwhile, the pull starts over. At the end the SHA-256 of the whole
partial file must equal the registry's, else the partial file is deleted and
the pull fails. Only then is the archive unpacked into a staging folder,
checked with `fedehr.shared.checkpoint.verify`, and renamed to OUT: OUT
either does not exist or holds a complete, verified checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedehr.shared.atomic import staged_directory, write_text
from fedehr.shared.checkpoint import CheckpointError, ModelCard, verify
from fedehr.shared.checkpoint import format as ckpt
from fedehr.shared.checkpoint.signing import PublicKeyLike, sha256_file
from fedehr.shared.registry import registry_pb2
from fedehr.shared.registry.channel import RegistryError, open_channel, stub
from fedehr.shared.registry.stream import StreamError, extract

CHECKPOINT_FILES = (*ckpt.SIGNED_FILES, ckpt.SIGNATURE, ckpt.SIGNER)

Progress = Callable[[int, int], None]  # (bytes held, total bytes)


@dataclass(frozen=True)
class PullResult:
    path: Path
    round: int
    sha256: str
    size: int  # bytes of the stream
    received: int  # bytes received by this call (less than size after a resume)
    resumed_from: int
    card: ModelCard


class _Changed(Exception):
    """The registry's stream is not the one the partial file began."""


def partial_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def pull(target: str, *, ca: str | os.PathLike, cert: str | os.PathLike,
         key: str | os.PathLike, out: str | os.PathLike, round: str = "latest",
         trusted_public_key: PublicKeyLike | None = None,
         on_progress: Progress | None = None, timeout: float | None = None) -> PullResult:
    """Pull `round` ("latest" or a number) from the registry at `target` into `out`.

    `on_progress(held, total)` is called after every chunk; an exception it
    raises interrupts the pull and leaves the partial file to resume from.
    """
    out = Path(out)
    if out.exists():
        raise RegistryError("the output folder already exists", where=str(out),
                            fix="choose a new --out, or remove the old checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial, meta_path = partial_paths(out)
    meta = _read_meta(meta_path) if partial.is_file() else None
    if meta is None:
        _discard(partial, meta_path)
    resumed_from = partial.stat().st_size if meta else 0
    channel = open_channel(target, ca, cert, key)
    try:
        try:
            rnd, sha, size, received = _receive(stub(channel), round, partial, meta_path, meta,
                                                on_progress, timeout)
        except _Changed:
            _discard(partial, meta_path)
            resumed_from = 0
            rnd, sha, size, received = _receive(stub(channel), round, partial, meta_path, None,
                                                on_progress, timeout)
    except grpc.RpcError as exc:
        raise RegistryError.of(exc, target) from None
    finally:
        channel.close()
        _drop_if_empty(partial, meta_path)
    actual = sha256_file(partial)
    if actual != sha:
        _discard(partial, meta_path)
        raise RegistryError(f"the pulled stream's SHA-256 {actual[:12]}... differs from the "
                            f"registry's {sha[:12]}... (corrupted in transfer or on disk)",
                            where=str(partial),
                            fix="the partial download was deleted; pull again")
    try:
        with staged_directory(out, kind=ckpt.KIND) as stage:
            extract(partial, stage, allowed=CHECKPOINT_FILES)
            card = verify(stage, trusted_public_key=trusted_public_key)
    except (StreamError, CheckpointError) as exc:
        _discard(partial, meta_path)
        raise type(exc)(exc.message, where=str(out), fix=exc.fix) from None
    _discard(partial, meta_path)
    return PullResult(out, rnd, sha, size, received, resumed_from, card)


def _receive(registry, round: str, partial: Path, meta_path: Path, meta: dict | None,
             on_progress: Progress | None, timeout: float | None) -> tuple[int, str, int, int]:
    offset = partial.stat().st_size if meta else 0
    ask = str(meta["round"]) if meta else round
    call = registry.PullCheckpoint(registry_pb2.PullCheckpointRequest(round=ask, offset=offset),
                                   timeout=timeout)
    position, announced = offset, None
    try:
        with open(partial, "ab") as fh:
            for chunk in call:
                if announced is None:
                    announced = chunk.sha256
                    if meta and (announced != meta["sha256"] or chunk.total_size < offset):
                        raise _Changed
                    write_text(meta_path, json.dumps({"round": chunk.round, "sha256": announced,
                                                      "size": chunk.total_size}) + "\n")
                if chunk.offset != position:
                    raise RegistryError(f"chunk at offset {chunk.offset} where {position} was "
                                        "expected", fix="pull again")
                fh.write(chunk.data)
                position += len(chunk.data)
                if on_progress is not None:
                    fh.flush()
                    on_progress(position, chunk.total_size)
                if chunk.last:
                    if chunk.sha256 != announced:
                        raise _Changed
                    return chunk.round, chunk.sha256, chunk.total_size, position - offset
    finally:
        call.cancel()  # no-op once the stream is done; frees the server if we stop early
    raise RegistryError("the registry closed the stream before its end", fix="pull again to "
                        "resume")


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
        return meta if {"round", "sha256"} <= set(meta) else None
    except (OSError, ValueError):
        return None


def _drop_if_empty(partial: Path, meta_path: Path) -> None:
    """A pull that failed before its first byte (refused, unreachable) leaves nothing."""
    with contextlib.suppress(FileNotFoundError):
        if partial.stat().st_size == 0:
            _discard(partial, meta_path)


def _discard(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
