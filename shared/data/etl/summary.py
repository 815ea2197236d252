"""What an import did, for the closing summary and for tests; one format for every ETL.

Drop reasons are ``"<table or file>: <reason>"`` (whole-import reasons have no prefix),
with counts in `rows_dropped` and, where the ETL knows it, the first place each reason
was met (``file:line``) in `first_seen`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DUPLICATE_EVENTS = "exact duplicate events"  # counted for the whole import


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
    first_seen: dict[str, str] = field(default_factory=dict)  # reason -> "file:line"

    def drop(self, reason: str, n: int = 1, *, where: str | None = None) -> None:
        if n:
            self.rows_dropped[reason] += n
            if where is not None:
                self.first_seen.setdefault(reason, where)

    def drop_in(self, table: str, reason: str, n: int = 1, *, where: str | None = None) -> None:
        """Count `n` rows of `table` dropped for `reason`."""
        self.drop(f"{table}: {reason}", n, where=where)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def table(self, title: str):
        """The closing summary as a rich table (what `fedehr data import` prints)."""
        from rich.table import Table

        out = Table(title=title, show_header=False)
        for label, value in (
            ("rows read", f"{self.rows_read:,}"),
            ("events written", f"{self.events_written:,}"),
            ("subjects", f"{self.subjects:,}"),
            ("codes", f"{self.codes:,}"),
            ("time", f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)"),
        ):
            out.add_row(label, value)
        for reason, count in sorted(self.rows_dropped.items()):
            where = self.first_seen.get(reason)
            out.add_row(f"dropped: {reason}",
                        f"{count:,}" + (f" (first at {where})" if where else ""))
        if self.skipped_tables:
            out.add_row("tables not present", ", ".join(self.skipped_tables))
        return out
