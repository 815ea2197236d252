"""What the site did, one JSON line per event, in state_dir/activity.jsonl.

Every release (vocabulary counts, value sketches, a trained update), every
evaluation and every refusal is recorded with its time, round and privacy
cost. `fedehr site status` and the site's Prometheus metrics read this file,
so both survive restarts of the daemon and of Flower's per-message processes.

Each event is also appended to the site's hash-chained audit log,
state_dir/audit.jsonl (fedehr.shared.audit; `fedehr audit verify` checks it),
with the kind as the audit event. activity.jsonl stays the plain log that
status and metrics read; audit.jsonl is the tamper-evident copy.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fedehr.shared.audit import AuditError, AuditLog

log = logging.getLogger("fedehr.site")

KINDS = ("release", "train", "evaluate", "refusal")


def activity_path(state_dir: Path) -> Path:
    return Path(state_dir) / "activity.jsonl"


def audit_path(state_dir: Path) -> Path:
    return Path(state_dir) / "audit.jsonl"


def record(state_dir: Path, kind: str, **fields) -> None:
    """Append one event here and to the audit chain.

    activity.jsonl gets a single short write, so concurrent appends do not
    interleave; the audit log takes a lock per append. A broken audit log (a
    line cut by a crash) is logged, not raised: the work it records has already
    happened, and `fedehr audit verify` reports the break.
    """
    path = activity_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.time(), "kind": kind, **fields}, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
    try:
        AuditLog(audit_path(state_dir)).append(kind, **fields)
    except AuditError as exc:
        log.error("audit log not written: %s", exc.one_line())


def read(state_dir: Path) -> list[dict]:
    path = activity_path(state_dir)
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
    return events
