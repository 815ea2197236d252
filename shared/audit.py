"""Append-only, hash-chained audit logs (JSON lines) for the consortium and each site.

Each line is canonical JSON (sorted keys, no spaces, UTF-8) of

    {"seq": 0, "time": "2025-01-01T12:00:00.000000Z", "event": "round", ...fields,
     "prev": sha256 of the previous line's bytes (64 zeros for the first line),
     "hash": sha256 of this line's canonical JSON without "hash"}

so `verify` finds any edited, deleted, reordered or truncated line and a
first line that does not start the chain, and names the first line that is
wrong. The server writes `<workdir>/audit.jsonl` (run-start, vocabulary,
warm-start, round, run-end); a site writes `<state_dir>/audit.jsonl` (every
event of its activity log: releases, training, evaluation, refusals). Other
producers (e.g. the registry recording checkpoint pulls) call
``AuditLog(path).append("pull", ...)``.

Appends are safe across processes on one host: each takes an exclusive
advisory lock (``fcntl.flock``), re-reads the tail under it, writes one line
with ``O_APPEND`` and fsyncs, so concurrent writers neither interleave nor
fork the chain.

What a hash chain does and does not prove: without a secret key it detects
tampering by anyone who does not rewrite the whole tail after the point they
changed. Someone who can rewrite the whole file can re-chain it, and dropping
lines at the very end leaves a shorter chain that still verifies. Anchoring
the head hash elsewhere closes both: `head(path)` is the value the next line
will carry as ``prev``, and the server puts it into each signed model card
(``training.audit_head``), so a log that no longer contains that head was
rewritten or cut. (A keyed HMAC chain is out of scope.)
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fedehr.shared.errors import FedEHRError

GENESIS = "0" * 64
RESERVED = ("seq", "time", "event", "prev", "hash")
_TAIL_CHUNK = 4096


class AuditError(FedEHRError):
    """An audit log cannot be read or appended to."""


def canonical(obj: dict) -> bytes:
    """The one byte form of a line: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _line_hash(line: dict) -> str:
    return sha256(canonical({k: v for k, v in line.items() if k != "hash"}))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """One hash-chained log file; cheap to construct, holds no open file between appends."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, event: str, **fields) -> dict:
        """Append one line and return it (as written, with ``seq``, ``prev`` and ``hash``)."""
        clash = sorted(set(fields) & set(RESERVED))
        if clash:
            raise AuditError(f"field names {clash} are reserved", where=str(self.path))
        # Round-trip through JSON first so that what is hashed is exactly what a reader
        # parses back (tuples become lists, keys strings, unknown objects their str()).
        body = json.loads(json.dumps(fields, default=str))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(self.path)
            if last is None:
                seq, prev = 0, GENESIS
            else:
                seq, prev = _parse_tail(last, self.path)["seq"] + 1, sha256(last)
            line = {"seq": seq, "time": _now(), "event": str(event), **body, "prev": prev}
            line["hash"] = _line_hash(line)
            data = canonical(line) + b"\n"
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            return line
        finally:
            os.close(fd)  # closing releases the lock

    def head(self) -> str:
        return head(self.path)


def _last_line(path: Path) -> bytes | None:
    """The last line's bytes without its newline; None for an empty or missing file.

    A file that does not end in a newline had a write cut short (a crash): appending
    to it would break the chain for good, so that is an error to look at, not to mend.
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return None
        fh.seek(end - 1)
        if fh.read(1) != b"\n":
            raise AuditError("the last line is truncated (a write was cut short)",
                             where=str(path), fix=f"run `fedehr audit verify {path}`, keep "
                             "the file as evidence and start a new log beside it")
        pos, tail = end - 1, b""
        while pos > 0 and b"\n" not in tail:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
        return tail.rsplit(b"\n", 1)[-1] if b"\n" in tail else tail


def _parse_tail(raw: bytes, path: Path) -> dict:
    try:
        line = json.loads(raw)
        int(line["seq"])
        return line
    except (ValueError, KeyError, TypeError):
        raise AuditError("the last line is not an audit line", where=str(path),
                         fix=f"run `fedehr audit verify {path}`") from None


def head(path: str | os.PathLike) -> str:
    """The hash the next line will carry as ``prev``: sha256 of the last line, or GENESIS.

    Reads only the tail; it does not verify the chain (use `verify` for that).
    """
    last = _last_line(Path(path))
    return GENESIS if last is None else sha256(last)


@dataclass
class VerifyReport:
    ok: bool
    lines: int  # lines read (up to and including the first bad one)
    first_bad_line: int | None = None  # 1-based line number
    reason: str = ""
    head: str = GENESIS  # sha256 of the last good line (GENESIS for an empty log)

    def summary(self) -> str:
        if self.ok:
            return f"intact: {self.lines} lines, head {self.head}"
        return f"line {self.first_bad_line}: {self.reason}"


def verify(path: str | os.PathLike, anchor: str | None = None) -> VerifyReport:
    """Walk the chain from the first line; stop at the first line that is wrong.

    An empty log is a finding (a log exists because something was written to it). With
    `anchor` (a head recorded elsewhere, e.g. a model card's ``training.audit_head``) the
    chain must pass through it: a log without it was cut short or rewritten.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditError("no audit log here", where=str(path),
                         fix="give the server's <workdir>/audit.jsonl or a site's "
                         "<state_dir>/audit.jsonl")
    prev, number, heads = GENESIS, 0, {GENESIS}
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            reason = _check(number, raw, prev)
            if reason:
                return VerifyReport(False, number, number, reason, prev)
            prev = sha256(raw[:-1])
            heads.add(prev)
    if number == 0:
        return VerifyReport(False, 0, 1, "the log is empty: its lines were removed, or it "
                            "was replaced by an empty file", prev)
    if anchor is not None and anchor not in heads:
        return VerifyReport(False, number, number + 1, f"the anchored head {anchor[:12]}... "
                            "is not in the chain: the log was cut short or rewritten", prev)
    return VerifyReport(True, number, None, "", prev)


def _check(number: int, raw: bytes, prev: str) -> str | None:
    """Why line `number` (raw bytes, newline included) breaks the chain, or None."""
    if not raw.endswith(b"\n"):
        return "truncated last line (no newline at the end)"
    raw = raw[:-1]
    try:
        line = json.loads(raw)
    except ValueError:
        return "not valid JSON"
    if not isinstance(line, dict) or not {"seq", "prev", "hash"} <= set(line):
        return "not an audit line (seq, prev or hash missing)"
    if line["seq"] != number - 1:
        return (f"seq is {line['seq']!r} where {number - 1} was expected: a line was "
                "deleted, inserted or moved")
    if line["prev"] != prev:
        if number == 1:
            return "bad genesis: the first line's prev is not 64 zeros"
        return ("prev does not match the line before: a line was deleted, inserted, moved "
                "or edited")
    if line["hash"] != _line_hash(line):
        return "hash does not match the line's content: the line was edited"
    if raw != canonical(line):
        return "not in canonical form: the line was rewritten"
    return None


def read(path: str | os.PathLike) -> list[dict]:
    """Every readable line (for display; use `verify` to check the chain)."""
    lines = []
    if not Path(path).is_file():
        raise AuditError("no audit log here", where=str(path))
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"seq": None, "event": f"<unreadable line {number}>"}
            lines.append(line if isinstance(line, dict) else {"event": f"<line {number}>"})
    return lines
