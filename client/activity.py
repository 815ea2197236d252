"""What the site did, one JSON line per event, in state_dir/activity.jsonl.

Every release (vocabulary counts, value sketches, a trained update), every
evaluation and every refusal is recorded with its time, round and privacy
cost. `fedehr site status` and the site's Prometheus metrics read this file,
so both survive restarts of the daemon and of Flower's per-message processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

KINDS = ("release", "train", "evaluate", "refusal")


def activity_path(state_dir: Path) -> Path:
    return Path(state_dir) / "activity.jsonl"


def record(state_dir: Path, kind: str, **fields) -> None:
    """Append one event; a single short write, so concurrent appends do not interleave."""
    path = activity_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.time(), "kind": kind, **fields}, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)


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
