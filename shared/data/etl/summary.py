"""What an import did, for the closing summary and for tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ImportSummary:
    source: str
    dest: str
    rows_read: int = 0
    events_written: int = 0
    subjects: int = 0
    codes: int = 0
    seconds: float = 0.0
    rows_dropped: Counter = field(default_factory=Counter)  # reason -> count
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows read
    skipped_tables: list[str] = field(default_factory=list)  # optional tables not present

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.rows_dropped[reason] += n

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0
