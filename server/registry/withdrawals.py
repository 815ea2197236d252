"""Rounds an operator withdrew from the registry: checkpoints/withdrawn.json.

Withdrawing hides a round from researchers (list, card, pull) without
deleting it, so the federation's own history and resume state stay intact
and the decision is on record::

    {"version": 1,
     "withdrawn": [{"round": 3, "by": "olga", "at": "2025-02-01T09:00:00+00:00",
                    "reason": "trained on a mislabeled export"}]}

The file is re-read on every call and rewritten atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

from fedehr.shared.atomic import write_text
from fedehr.shared.errors import FedEHRError

VERSION = 1


class Withdrawals:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def entries(self) -> dict[int, dict]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            return {int(e["round"]): e for e in data["withdrawn"]}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FedEHRError(f"unreadable list of withdrawn rounds ({exc})",
                              where=str(self.path), fix="restore the file from a backup") from None

    def withdraw(self, round: int, by: str, reason: str = "") -> bool:
        """Record `round` as withdrawn; returns whether it already was."""
        with self._lock:
            entries = self.entries()
            if round in entries:
                return True
            entries[round] = {"round": round, "by": by, "reason": reason,
                              "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            doc = {"version": VERSION, "withdrawn": [entries[r] for r in sorted(entries)]}
            write_text(self.path, json.dumps(doc, indent=2) + "\n")
            return False
