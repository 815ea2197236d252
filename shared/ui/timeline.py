"""A patient's history as the Patients page draws it: events in clinical words,
grouped by hospital admission (HOSPITAL_ADMISSION ... HOSPITAL_DISCHARGE, the
codes every fedehr ETL writes), other events grouped by day; lab values with
their unit, notes marked."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.errors import DataError

ADMISSION, DISCHARGE = "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE"


@dataclass
class Event:
    time: datetime | None
    code: str
    words: str
    value: str = ""  # "1.27 mg/dL"
    note: str = ""  # free text, when the event is a note


@dataclass
class Section:
    title: str
    admission: bool
    events: list[Event] = field(default_factory=list)


@dataclass
class Timeline:
    subject: int
    static: list[Event]
    sections: list[Section]

    @property
    def event_count(self) -> int:
        return sum(len(s.events) for s in self.sections)


def patient_timeline(dataset, index, subject: int) -> Timeline:
    events = (dataset.scan().filter(pl.col(S.SUBJECT_ID) == subject)
              .sort(S.TIME, nulls_last=False).collect())
    if events.is_empty():
        raise DataError(f"no patient with subject_id {subject} in this dataset",
                        where="patient id", fix="check the id against the hospital's records")
    static, sections = [], []
    current: Section | None = None
    for row in events.iter_rows(named=True):
        event = _event(row, index)
        if event.time is None:
            static.append(event)
            continue
        code = row[S.CODE]
        if code.startswith(ADMISSION):
            current = Section(f"Admission {event.time:%Y-%m-%d %H:%M}", True)
            sections.append(current)
        elif current is None or (not current.admission and not current.title.endswith(
                f"{event.time:%Y-%m-%d}")):
            current = Section(f"Events on {event.time:%Y-%m-%d}", False)
            sections.append(current)
        current.events.append(event)
        if code.startswith(DISCHARGE) and current.admission:
            current.title += f" to {event.time:%Y-%m-%d %H:%M}"
            current = None
    return Timeline(subject, static, sections)


def _event(row: dict, index) -> Event:
    from fedehr.shared.clinical.prompt import code_unit

    code, value, text = row[S.CODE], row[S.NUMERIC_VALUE], row[S.TEXT_VALUE]
    shown = ""
    if value is not None:
        shown = f"{value:.3g} {code_unit(code) or ''}"
    note = text or ""
    if not note and code.upper().startswith("NOTE"):
        note = "(note text not stored)"
    return Event(row[S.TIME], code, index.describe(code), shown.strip(), note)
