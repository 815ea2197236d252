"""What a clinical question asks, read from an ACES task config.

An ACES task (the MEDS community format, https://eventstreamml.readthedocs.io
/ github.com/justin13601/ACES) names predicates over codes, a trigger
predicate and a chain of windows; the window with ``label:`` holds the
outcome. Zero-shot answering needs less than the full task: which codes count
as the outcome, from when to when relative to the prediction time, an optional
numeric value condition, and (for windows that close on an event, like
"until discharge") which codes end the window. `Outcome` holds exactly that;
`outcome_from_task` derives it from a task config dict.

Supported subset of the ACES language (anything else raises a ConfigError that
names the key):

- plain predicates: ``code: "X"``, ``code: {regex: "..."}``, ``code: {any: [..]}``,
  with optional ``value_min``/``value_max`` (+ ``value_min_inclusive``/
  ``value_max_inclusive``);
- derived predicates: ``expr: or(a, b, ...)`` of plain predicates (``and(...)``
  is accepted by ACES but cannot be expressed as one event's code, so it is
  refused here);
- window bounds: ``NULL``, ``trigger``, ``trigger +/- DURATION``,
  ``WINDOW.start``/``WINDOW.end`` (+/- DURATION), ``start``/``end +/- DURATION``
  and event-bound ends ``start -> PREDICATE``;
- ``index_timestamp: start|end`` on one window sets the prediction time (the
  trigger time when no window names it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fedehr.shared.errors import ConfigError, DataError

# Cap for windows that close on an event ("until discharge"): the model is asked
# to generate at most this far ahead. Chosen to cover any hospital stay.
DEFAULT_EVENT_BOUND_HORIZON = timedelta(days=365)

SPECIAL_PREDICATES = ("_ANY_EVENT", "_RECORD_START", "_RECORD_END")


@dataclass(frozen=True)
class Outcome:
    """The outcome of a clinical question, relative to a prediction time.

    An event counts as the outcome when its code is in `codes` (or matches one of
    `patterns`), its value meets the numeric condition (if any), and its time lies
    in (prediction_time + offset, prediction_time + horizon]. When `stop_codes`
    is set the window also closes at the first event with one of those codes
    (an event that is both outcome and stop, like death in "death before
    discharge or death", still counts).
    """

    codes: tuple[str, ...]
    horizon: timedelta
    description: str = ""
    min_value: float | None = None
    max_value: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    patterns: tuple[str, ...] = ()
    offset: timedelta = timedelta(0)
    stop_codes: tuple[str, ...] = ()
    stop_patterns: tuple[str, ...] = ()
    index_codes: tuple[str, ...] = ()
    index_description: str = ""
    name: str = "outcome"
    unit: str | None = None
    stop_description: str = ""
    _compiled: tuple[re.Pattern, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.horizon <= self.offset:
            raise ConfigError(f"outcome window ends ({self.horizon}) before it starts "
                              f"({self.offset})", where=self.name,
                              fix="give a positive duration after the prediction time")
        object.__setattr__(self, "_compiled", tuple(re.compile(p) for p in self.patterns))

    @property
    def has_value_condition(self) -> bool:
        return self.min_value is not None or self.max_value is not None

    def matches_code(self, code: str) -> bool:
        return code in self.codes or any(p.search(code) for p in self._compiled)

    def is_stop(self, code: str) -> bool:
        return code in self.stop_codes or any(re.search(p, code) for p in self.stop_patterns)

    def matches_value(self, value: float | None) -> bool:
        """Whether a numeric value meets the condition (always true without one)."""
        if not self.has_value_condition:
            return True
        if value is None or value != value:  # None or NaN
            return False
        if self.min_value is not None:
            if value < self.min_value or (value == self.min_value and not self.min_inclusive):
                return False
        if self.max_value is not None:
            if value > self.max_value or (value == self.max_value and not self.max_inclusive):
                return False
        return True

    def window(self, prediction_time: datetime) -> tuple[datetime, datetime]:
        """The (exclusive start, inclusive end) of the outcome window."""
        return prediction_time + self.offset, prediction_time + self.horizon

    def clinical_words(self) -> str:
        """One line a physician can confirm, e.g. 'death within 30 days after discharge'."""
        what = self.description or self.name
        if self.has_value_condition:
            parts = []
            if self.min_value is not None:
                parts.append(f"{'>=' if self.min_inclusive else '>'} {self.min_value:g}")
            if self.max_value is not None:
                parts.append(f"{'<=' if self.max_inclusive else '<'} {self.max_value:g}")
            what += " " + " and ".join(parts) + (f" {self.unit}" if self.unit else "")
        when = f"within {format_duration(self.horizon)}"
        if self.offset:
            when = f"between {format_duration(self.offset)} and {format_duration(self.horizon)}"
        if self.stop_codes or self.stop_patterns:
            until = self.stop_description or "the window-closing event"
            when = f"before {until} (at most {format_duration(self.horizon)})"
        after = f" after {self.index_description}" if self.index_description else ""
        return f"{what} {when}{after}"


# -- durations ---------------------------------------------------------------

_UNIT_SECONDS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 7 * 86400, "wk": 7 * 86400, "week": 7 * 86400, "weeks": 7 * 86400,
    "mo": 30 * 86400, "month": 30 * 86400, "months": 30 * 86400,
    "y": 365 * 86400, "yr": 365 * 86400, "year": 365 * 86400, "years": 365 * 86400,
}
MAX_DURATION = timedelta(days=200 * 365)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]+)")


def parse_duration(text: str, *, where: str = "duration") -> timedelta:
    """'30d', '48h', '2h30m', '30 days', '1 week' -> timedelta (months = 30 d, years = 365 d)."""
    compact = text.strip().replace(",", " ")
    parts = _DURATION_PART.findall(compact)
    if not parts or _DURATION_PART.sub("", compact).strip():
        raise ConfigError(f"cannot read duration {text!r}", where=where,
                          fix="write it like 30d, 48h, 2h30m or '30 days'")
    seconds = 0.0
    for number, unit in parts:
        unit_seconds = _UNIT_SECONDS.get(unit.lower())
        if unit_seconds is None:
            raise ConfigError(f"unknown time unit {unit!r} in {text!r}", where=where,
                              fix="use s, min, h, d, w, mo or y")
        seconds += float(number) * unit_seconds
    if seconds > MAX_DURATION.total_seconds():  # timedelta itself overflows near 2.7 My
        raise ConfigError(f"duration {text!r} is longer than {MAX_DURATION.days // 365} years",
                          where=where, fix="give a horizon within a human lifetime")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Inverse of parse_duration for whole units: 30 days, 48 hours, 90 minutes."""
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def aces_duration(delta: timedelta) -> str:
    """A timedelta in the compact ACES form ('30d', '48h', '90m', '45s')."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- predicates ----------------------------------------------------------------

@dataclass(frozen=True)
class _Predicate:
    codes: tuple[str, ...]
    patterns: tuple[str, ...]
    min_value: float | None = None
    max_value: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def value_key(self) -> tuple:
        return (self.min_value, self.max_value, self.min_inclusive, self.max_inclusive)


_EXPR = re.compile(r"^\s*(or|and)\s*\((.*)\)\s*$", re.IGNORECASE)


def _plain_predicate(name: str, spec: dict) -> _Predicate:
    where = f"predicates.{name}.code"
    code = spec.get("code")
    if isinstance(code, str):
        codes, patterns = (code,), ()
    elif isinstance(code, dict) and "regex" in code:
        codes, patterns = (), (str(code["regex"]),)
    elif isinstance(code, dict) and "any" in code:
        codes, patterns = tuple(str(c) for c in code["any"]), ()
    else:
        raise ConfigError(f"unsupported code spec {code!r}", where=where,
                          fix="write code: \"X\", code: {regex: \"...\"} or code: {any: [...]}")
    return _Predicate(
        codes=codes, patterns=patterns,
        min_value=_optional_float(spec.get("value_min"), f"predicates.{name}.value_min"),
        max_value=_optional_float(spec.get("value_max"), f"predicates.{name}.value_max"),
        min_inclusive=bool(spec.get("value_min_inclusive", True)),
        max_inclusive=bool(spec.get("value_max_inclusive", True)),
    )


def _optional_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"not a number: {value!r}", where=where, fix="give a number") from None


def resolve_predicate(
    predicates: dict, name: str, *, seen: tuple[str, ...] = ()
) -> list[_Predicate]:
    """A predicate as the list of plain predicates whose union it is."""
    if name in seen:
        raise ConfigError(f"predicate {name!r} refers to itself", where="predicates",
                          fix="remove the cycle")
    spec = predicates.get(name)
    if spec is None:
        raise ConfigError(f"unknown predicate {name!r}", where="predicates",
                          fix=f"define it; known: {', '.join(sorted(predicates)) or 'none'}")
    if not isinstance(spec, dict):
        raise ConfigError(f"predicate {name!r} must be a mapping", where=f"predicates.{name}",
                          fix="give code: ... or expr: or(...)")
    if "expr" in spec:
        match = _EXPR.match(str(spec["expr"]))
        if not match:
            raise ConfigError(f"cannot read expr {spec['expr']!r}", where=f"predicates.{name}.expr",
                              fix="write expr: or(a, b)")
        if match.group(1).lower() == "and":
            raise ConfigError("and(...) predicates cannot define an outcome event",
                              where=f"predicates.{name}.expr",
                              fix="use or(...) for outcomes; and(...) is for cohort windows")
        parts: list[_Predicate] = []
        for child in (c.strip() for c in match.group(2).split(",")):
            parts.extend(resolve_predicate(predicates, child, seen=(*seen, name)))
        return parts
    return [_plain_predicate(name, spec)]


def _merge(plain: list[_Predicate], name: str) -> _Predicate:
    """Union of plain predicates that share one value condition."""
    keys = {p.value_key() for p in plain}
    if len(keys) > 1:
        raise ConfigError(f"predicate {name!r} mixes different value conditions",
                          where=f"predicates.{name}",
                          fix="give one value range for all codes of the outcome")
    first = plain[0]
    return _Predicate(
        codes=tuple(dict.fromkeys(c for p in plain for c in p.codes)),
        patterns=tuple(dict.fromkeys(r for p in plain for r in p.patterns)),
        min_value=first.min_value, max_value=first.max_value,
        min_inclusive=first.min_inclusive, max_inclusive=first.max_inclusive,
    )


# -- windows -------------------------------------------------------------------

_REF = re.compile(
    r"^(?P<ref>[A-Za-z_][\w]*(?:\.(?:start|end))?)\s*(?:(?P<sign>[+-])\s*(?P<dur>.+))?$"
)
_EVENT_BOUND = re.compile(r"^(?P<ref>[\w.]+)\s*(?P<arrow>->|<-)\s*(?P<pred>[\w]+)$")


class _Timeline:
    """Window bounds as offsets from the trigger time (None = unbounded or event-bound)."""

    def __init__(self, windows: dict):
        self.windows = windows
        self.cache: dict[str, timedelta | None] = {}
        self.event_bound: dict[str, str] = {}  # "window.end" -> predicate that closes it

    def bound(self, window: str, side: str, *, depth: int = 0) -> timedelta | None:
        key = f"{window}.{side}"
        if key in self.cache:
            return self.cache[key]
        if depth > 32:
            raise ConfigError("window bounds refer to each other in a cycle", where="windows",
                              fix="anchor one window on the trigger")
        spec = self.windows.get(window)
        if spec is None:
            raise ConfigError(f"unknown window {window!r}", where="windows",
                              fix=f"known windows: {', '.join(self.windows)}")
        expr = spec.get(side)
        value = self._evaluate(expr, window, f"windows.{window}.{side}", depth)
        self.cache[key] = value
        return value

    def _evaluate(self, expr: Any, window: str, where: str, depth: int) -> timedelta | None:
        if expr is None or (isinstance(expr, str) and expr.strip().upper() in ("NULL", "NONE", "")):
            return None
        text = str(expr).strip()
        event = _EVENT_BOUND.match(text)
        if event:
            self.event_bound[where.removeprefix("windows.")] = event.group("pred")
            return None
        match = _REF.match(text)
        if not match:
            raise ConfigError(f"cannot read window bound {text!r}", where=where,
                              fix="write trigger, trigger + 24h, input.end, start + 30d "
                                  "or start -> discharge")
        ref = match.group("ref")
        if ref == "trigger":
            base: timedelta | None = timedelta(0)
        elif ref in ("start", "end"):
            base = self.bound(window, ref, depth=depth + 1)
        elif "." in ref:
            other, side = ref.split(".")
            base = self.bound(other, side, depth=depth + 1)
        else:
            raise ConfigError(f"unknown reference {ref!r}", where=where,
                              fix="refer to trigger, start, end or WINDOW.start/WINDOW.end")
        if base is None:
            return None
        if match.group("dur"):
            delta = parse_duration(match.group("dur"), where=where)
            base = base + delta if match.group("sign") == "+" else base - delta
        return base

    def index_offset(self) -> timedelta:
        for name, spec in self.windows.items():
            side = spec.get("index_timestamp")
            if side:
                if side not in ("start", "end"):
                    raise ConfigError(f"index_timestamp must be start or end, not {side!r}",
                                      where=f"windows.{name}.index_timestamp",
                                      fix="use start or end")
                offset = self.bound(name, side)
                if offset is None:
                    raise ConfigError("the prediction time must sit at a fixed offset from the "
                                      "trigger", where=f"windows.{name}.index_timestamp",
                                      fix="put index_timestamp on a bound like trigger + 24h")
                return offset
        return timedelta(0)


def _label_window(windows: dict) -> tuple[str, str]:
    labelled = [(name, spec["label"]) for name, spec in windows.items()
                if isinstance(spec, dict) and spec.get("label")]
    if len(labelled) != 1:
        raise ConfigError(f"expected exactly one window with a label, found {len(labelled)}",
                          where="windows", fix="add label: PREDICATE to the outcome window")
    return labelled[0]


def outcome_from_task(
    task_config: dict,
    *,
    predicates: dict | None = None,
    max_horizon: timedelta = DEFAULT_EVENT_BOUND_HORIZON,
) -> Outcome:
    """The outcome of an ACES task config: label predicate codes and window, relative to
    the prediction time. `predicates` (e.g. a per-dataset predicates file) override the
    task's own; `max_horizon` caps windows that close on an event."""
    if not isinstance(task_config, dict):
        raise ConfigError("task config must be a mapping", where="task",
                          fix="load the ACES YAML into a dict")
    all_predicates = {**(task_config.get("predicates") or {}), **(predicates or {})}
    windows = task_config.get("windows") or {}
    if not windows:
        raise ConfigError("no windows", where="windows", fix="add a window with label:")
    window, label = _label_window(windows)
    outcome = _merge(resolve_predicate(all_predicates, label), label)

    timeline = _Timeline(windows)
    index = timeline.index_offset()
    start = timeline.bound(window, "start")
    end = timeline.bound(window, "end")
    stop_pred = timeline.event_bound.get(f"{window}.end")
    offset = (start - index) if start is not None else timedelta(0)
    if end is None:
        if stop_pred is None:
            raise ConfigError("the label window has no end", where=f"windows.{window}.end",
                              fix="give end: start + 30d or end: start -> discharge")
        horizon = max_horizon
    else:
        horizon = end - index
    offset = max(offset, timedelta(0))  # zero-shot cannot look before the prediction time

    stop_codes: tuple[str, ...] = ()
    stop_patterns: tuple[str, ...] = ()
    if stop_pred:
        stop = _merge(resolve_predicate(all_predicates, stop_pred), stop_pred)
        stop_codes, stop_patterns = stop.codes, stop.patterns

    trigger = str(task_config.get("trigger", "")).strip()
    index_codes: tuple[str, ...] = ()
    if trigger and trigger not in SPECIAL_PREDICATES and trigger in all_predicates:
        try:
            index_codes = _merge(resolve_predicate(all_predicates, trigger), trigger).codes
        except ConfigError:
            index_codes = ()  # an and(...) trigger is fine for labels, just not listable

    meta = task_config.get("metadata") or {}
    return Outcome(
        codes=outcome.codes, patterns=outcome.patterns, horizon=horizon, offset=offset,
        min_value=outcome.min_value, max_value=outcome.max_value,
        min_inclusive=outcome.min_inclusive, max_inclusive=outcome.max_inclusive,
        stop_codes=stop_codes, stop_patterns=stop_patterns,
        description=str(meta.get("outcome_description") or task_config.get("description")
                        or label.replace("_", " ")),
        index_codes=index_codes,
        index_description=str(meta.get("index_description") or trigger.replace("_", " ")),
        name=str(meta.get("name") or task_config.get("name") or label),
        unit=meta.get("outcome_unit"),
        stop_description=str(meta.get("until_description")
                             or (stop_pred or "").replace("_", " ")),
    )


# -- where a question is asked -------------------------------------------------------

def prediction_time(dataset, subject: int, resolved, at: datetime | None = None) -> datetime:
    """When a question about one patient is asked: `at` if given, else the latest event
    of the question's index concept in the record (`resolved`: a prompt.ResolvedPrompt),
    else the patient's last event (`fedehr model ask --patient` and the web page)."""
    import polars as pl

    events = (dataset.scan().filter(pl.col("subject_id") == subject)
              .filter(pl.col("time").is_not_null()).select("time", "code").collect())
    if events.is_empty():
        raise DataError(f"no events for subject {subject}", where=str(dataset.root),
                        fix="check --patient against the dataset's subject_id values")
    if at is not None:
        return at
    if resolved.index is not None:
        hits = events.filter(pl.col("code").is_in(list(resolved.index.codes)))
        if hits.is_empty():
            raise DataError(f"subject {subject} has no {resolved.prompt.index} in the record",
                            where="--patient", fix="pass --at TIME or ask about another patient")
        return hits["time"].max()
    return events["time"].max()
