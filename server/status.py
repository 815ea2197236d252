"""The run's status file: what `fedehr run status` and the progress display read.

The ServerApp runs in a process Flower starts; it reports through this JSON
file (written atomically), which also holds the final result. Success is
read from here, never from `flwr run`'s exit code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fedehr.shared.atomic import write_text

PHASES = ("starting", "vocabulary", "warm-start", "training", "finished", "failed")


class StatusFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.data: dict[str, Any] = {"phase": "starting", "round": 0, "rounds": [],
                                     "started_at": time.time(), "message": ""}

    def update(self, **fields: Any) -> None:
        self.data.update(fields, updated_at=time.time())
        write_text(self.path, json.dumps(self.data, indent=2, default=str))

    def add_round(self, entry: dict) -> None:
        rounds = [r for r in self.data["rounds"] if r["round"] != entry["round"]]
        self.update(rounds=[*rounds, entry], round=entry["round"])


def read_status(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
