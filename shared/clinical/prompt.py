"""Clinical prompts: a question in clinical words -> an ACES-style task config.

A prompt names an outcome, optionally a value condition, a window and the
index event the window hangs on, and optionally the patients it is about.
The grammar is small and fixed on purpose (no NLP; words outside it are an
error that shows the accepted forms):

    PROMPT  := [risk of | probability of] OUTCOME [VALUE] WINDOW [COHORT]
    WINDOW  := within DURATION [(after | of | from | following) INDEX]
             | before END_EVENT [(after | from | following) INDEX]
    VALUE   := (above | over | greater than | more than | > | >= | at least) NUMBER [UNIT]
             | (below | under | less than | < | <= | at most) NUMBER [UNIT]
             | between NUMBER and NUMBER [UNIT]
    COHORT  := (for | in | among) patients with CONCEPT
    DURATION:= 30 days | 48 hours | 2 weeks | 30d | 48h ...

OUTCOME, INDEX, END_EVENT and CONCEPT are concept phrases (see concepts.py;
alternatives joined with "or"). Examples:

    death within 30 days after discharge
    creatinine above 2 mg/dL within 48 hours of ICU admission
    death before discharge after admission            (in-hospital mortality)
    readmission within 30 days after discharge for patients with heart failure

The saved (YAML) form holds the same parts as keys, or the sentence itself:

    name: aki_after_icu              # optional
    outcome: creatinine
    value: {above: 2, unit: mg/dL}   # or {below: x} or {between: [a, b]}
    within: 48h                      # or  before: discharge
    after: ICU admission             # optional
    cohort: heart failure            # optional: patients with ...
    # or simply:  prompt: "creatinine above 2 mg/dL within 48 hours of ICU admission"

Both compile (`ResolvedPrompt.task_config`) to the ACES form (predicates,
trigger, windows) that `query.outcome_from_task` reads back. Without an index
event the trigger is ``_ANY_EVENT`` (every event is a possible prediction time;
for one patient the prediction time then comes from ``--at`` or the last event).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from fedehr.shared.clinical.concepts import CodeIndex, Concept
from fedehr.shared.clinical.query import aces_duration, format_duration, parse_duration
from fedehr.shared.errors import ConfigError

ACCEPTED_FORMS = (
    "OUTCOME (optionally: above/below X UNIT) within DURATION after INDEX (optionally: for "
    "patients with CONCEPT), or OUTCOME before END_EVENT after INDEX. Examples: "
    "'death within 30 days after discharge', "
    "'creatinine above 2 mg/dL within 48 hours of ICU admission', "
    "'death before discharge after admission'"
)

_NUMBER = r"-?\d+(?:\.\d+)?"
_LEAD = re.compile(r"^(?:the\s+)?(?:risk|probability|chance|likelihood)\s+of\s+", re.I)
_COHORT = re.compile(r"^(?P<body>.+?)\s+(?:for|in|among)\s+patients\s+with\s+(?P<cohort>.+)$",
                     re.I)
_WITHIN = re.compile(
    r"^(?P<what>.+?)\s+within\s+(?:the\s+next\s+)?(?P<dur>(?:\d+(?:\.\d+)?\s*[a-z]+\s*?)+?)"
    r"(?:\s+(?:after|of|from|following)\s+(?P<index>.+))?$", re.I)
_BEFORE = re.compile(
    r"^(?P<what>.+?)\s+before\s+(?P<end>.+?)(?:\s+(?:after|from|following)\s+(?P<index>.+))?$",
    re.I)
_ABOVE = r"above|over|greater\s+than|more\s+than|higher\s+than|>=|>|at\s+least"
_BELOW = r"below|under|less\s+than|lower\s+than|<=|<|at\s+most"
_VALUE = re.compile(rf"^(?P<concept>.+?)\s+(?P<op>{_ABOVE}|{_BELOW})\s*(?P<num>{_NUMBER})"
                    r"\s*(?P<unit>\S+)?$", re.I)
_BETWEEN = re.compile(rf"^(?P<concept>.+?)\s+between\s+(?P<lo>{_NUMBER})\s+and\s+"
                      rf"(?P<hi>{_NUMBER})\s*(?P<unit>\S+)?$", re.I)


@dataclass(frozen=True)
class ValueCondition:
    min_value: float | None = None
    max_value: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    unit: str | None = None

    def words(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.min_value is not None and self.max_value is not None:
            return f"between {self.min_value:g} and {self.max_value:g}{unit}"
        if self.min_value is not None:
            return f"{'at least' if self.min_inclusive else 'above'} {self.min_value:g}{unit}"
        return f"{'at most' if self.max_inclusive else 'below'} {self.max_value:g}{unit}"


@dataclass(frozen=True)
class ClinicalPrompt:
    """The parts of a clinical question, still in words."""

    outcome: str
    within: timedelta | None = None
    index: str | None = None
    until: str | None = None  # event that closes the window ("before discharge")
    value: ValueCondition | None = None
    cohort: str | None = None
    name: str | None = None
    text: str = ""

    def sentence(self) -> str:
        out = self.outcome + (f" {self.value.words()}" if self.value else "")
        if self.within is not None:
            out += f" within {format_duration(self.within)}"
        if self.until:
            out += f" before {self.until}"
        if self.index:
            out += f" after {self.index}"
        if self.cohort:
            out += f" for patients with {self.cohort}"
        return out


def _fail(text: str, why: str) -> ConfigError:
    return ConfigError(f"cannot read the prompt {text!r} ({why})", where="prompt",
                       fix=f"write it as {ACCEPTED_FORMS}")


def parse_prompt(text: str) -> ClinicalPrompt:
    """A prompt sentence -> its parts (see the grammar in the module docstring)."""
    body = " ".join(text.strip().rstrip("?.").split())
    body = _LEAD.sub("", body)
    if not body:
        raise _fail(text, "it is empty")
    cohort = None
    match = _COHORT.match(body)
    if match:
        body, cohort = match.group("body"), match.group("cohort").strip()
    within = until = index = None
    match = _WITHIN.match(body)
    if match:
        within = parse_duration(match.group("dur"), where="prompt")
    else:
        match = _BEFORE.match(body)
        if not match:
            raise _fail(text, "no 'within DURATION' or 'before EVENT'")
        until = match.group("end").strip()
    what, index = match.group("what").strip(), (match.group("index") or "").strip() or None
    outcome, value = _split_value(what, text)
    if within is not None and within <= timedelta(0):
        raise _fail(text, "the duration must be positive")
    return ClinicalPrompt(outcome=outcome, within=within, index=index, until=until,
                          value=value, cohort=cohort, text=text.strip())


def _split_value(what: str, text: str) -> tuple[str, ValueCondition | None]:
    match = _BETWEEN.match(what)
    if match:
        lo, hi = float(match.group("lo")), float(match.group("hi"))
        if lo > hi:
            raise _fail(text, f"between {lo:g} and {hi:g} is empty")
        return match.group("concept").strip(), ValueCondition(lo, hi, unit=match.group("unit"))
    match = _VALUE.match(what)
    if not match:
        return what, None
    op, number = re.sub(r"\s+", " ", match.group("op").lower()), float(match.group("num"))
    unit = match.group("unit")
    if re.fullmatch(_ABOVE, op):
        cond = ValueCondition(min_value=number, min_inclusive=op in (">=", "at least"),
                              unit=unit)
    else:
        cond = ValueCondition(max_value=number, max_inclusive=op in ("<=", "at most"), unit=unit)
    return match.group("concept").strip(), cond


def load_prompt_file(path: str | Path) -> ClinicalPrompt:
    """A saved prompt (YAML; see the module docstring)."""
    path = Path(path)
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("no such prompt file", where=where, fix="check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc})", where=where, fix="fix the YAML") from None
    if not isinstance(data, dict):
        raise ConfigError("a saved prompt must be a mapping", where=where,
                          fix="write keys such as outcome:, within:, after:")
    return prompt_from_dict(data, where=where)


def prompt_from_dict(data: dict, *, where: str = "prompt file") -> ClinicalPrompt:
    known = {"name", "prompt", "outcome", "value", "within", "before", "after", "cohort"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown keys {unknown}", where=where,
                          fix=f"use only {', '.join(sorted(known))}")
    for key in ("name", "prompt", "outcome", "after", "before", "cohort"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"{key}: must be text, not {type(data[key]).__name__}",
                              where=where, fix=f"write {key}: as words, e.g. in quotes")
    if "prompt" in data:
        parsed = parse_prompt(str(data["prompt"]))
        return ClinicalPrompt(**{**parsed.__dict__, "name": data.get("name")})
    if not data.get("outcome"):
        raise ConfigError("missing outcome", where=where, fix="add outcome: (e.g. death)")
    if bool(data.get("within")) == bool(data.get("before")):
        raise ConfigError("give exactly one of within: and before:", where=where,
                          fix="within: 30d, or before: discharge")
    within = (parse_duration(str(data["within"]), where=f"{where}: within")
              if data.get("within") else None)
    prompt = ClinicalPrompt(outcome=str(data["outcome"]), within=within,
                            index=data.get("after"), until=data.get("before"),
                            value=_value_from_dict(data.get("value"), where),
                            cohort=data.get("cohort"), name=data.get("name"))
    return ClinicalPrompt(**{**prompt.__dict__, "text": prompt.sentence()})


def _value_from_dict(value, where: str) -> ValueCondition | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not ({"above", "below", "between"} & set(value)):
        raise ConfigError("value must hold above:, below: or between:", where=f"{where}: value",
                          fix="write value: {above: 2, unit: mg/dL}")
    unit = value.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise ConfigError("unit must be text", where=f"{where}: value",
                          fix="write value: {above: 2, unit: mg/dL}")
    try:
        if "between" in value:
            lo, hi = (_bound(x) for x in value["between"])
            return ValueCondition(lo, hi, unit=unit)
        if "above" in value:
            return ValueCondition(min_value=_bound(value["above"]), min_inclusive=False,
                                  unit=unit)
        return ValueCondition(max_value=_bound(value["below"]), max_inclusive=False, unit=unit)
    except (TypeError, ValueError):
        raise ConfigError("value bounds must be finite numbers", where=f"{where}: value",
                          fix="write value: {between: [1.5, 3]}") from None


def _bound(value) -> float:
    if isinstance(value, bool) or not math.isfinite(number := float(value)):
        raise ValueError(value)
    return number


# -- resolution and compilation -----------------------------------------------------

@dataclass(frozen=True)
class ResolvedPrompt:
    """A prompt with every concept resolved to codes: what the user confirms."""

    prompt: ClinicalPrompt
    outcome: Concept
    index: Concept | None
    until: Concept | None
    cohort: Concept | None

    def confirmation_lines(self) -> list[tuple[str, str]]:
        rows = [("question", self.prompt.sentence()),
                ("outcome", self.outcome.summary())]
        if self.prompt.value:
            rows.append(("value", self.prompt.value.words()))
        if self.prompt.within is not None:
            rows.append(("window", f"within {format_duration(self.prompt.within)}"))
        for label, concept in (("window closes at", self.until), ("index event", self.index),
                               ("patients with", self.cohort)):
            if concept is not None:
                rows.append((label, concept.summary()))
        if self.index is None:
            rows.append(("index event", "none: the prediction time (--at, or the last event)"))
        return rows

    def task_config(self) -> dict:
        """The ACES-style task config (predicates, trigger, windows) of this question."""
        p = self.prompt
        outcome_pred: dict = {"code": {"any": list(self.outcome.codes)}}
        if p.value is not None:
            if p.value.min_value is not None:
                outcome_pred.update(value_min=p.value.min_value,
                                    value_min_inclusive=p.value.min_inclusive)
            if p.value.max_value is not None:
                outcome_pred.update(value_max=p.value.max_value,
                                    value_max_inclusive=p.value.max_inclusive)
        predicates: dict = {"outcome": outcome_pred}
        trigger = "_ANY_EVENT"
        if self.index is not None:
            predicates["index_event"] = {"code": {"any": list(self.index.codes)}}
            trigger = "index_event"
        input_window: dict = {"start": None, "end": "trigger", "start_inclusive": True,
                              "end_inclusive": True, "index_timestamp": "end"}
        if self.cohort is not None:
            predicates["cohort"] = {"code": {"any": list(self.cohort.codes)}}
            input_window["has"] = {"cohort": "(1, None)"}
        if p.within is not None:
            end = f"start + {aces_duration(p.within)}"
        else:
            predicates["window_end"] = {"code": {"any": list(self.until.codes)}}
            end = "start -> window_end"
        target = {"start": "input.end", "end": end, "start_inclusive": False,
                  "end_inclusive": True, "label": "outcome"}
        return {
            "description": p.sentence(),
            "predicates": predicates,
            "trigger": trigger,
            "windows": {"input": input_window, "target": target},
            "metadata": {"name": p.name or _slug(p.sentence()),
                         "outcome_description": p.outcome,
                         "outcome_unit": p.value.unit if p.value else None,
                         "until_description": p.until,
                         "index_description": p.index or "the prediction time",
                         "prompt": p.text or p.sentence()},
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def resolve_prompt(prompt: ClinicalPrompt, index: CodeIndex) -> ResolvedPrompt:
    """Resolve every concept of a prompt; value units are checked against the codes'."""
    outcome = index.resolve(prompt.outcome)
    if prompt.value is not None and prompt.value.unit:
        outcome = _keep_unit(outcome, prompt.value.unit, index)
    return ResolvedPrompt(
        prompt=prompt, outcome=outcome,
        index=index.resolve(prompt.index) if prompt.index else None,
        until=index.resolve(prompt.until) if prompt.until else None,
        cohort=index.resolve(prompt.cohort) if prompt.cohort else None,
    )


def code_unit(code: str, index: CodeIndex | None = None) -> str | None:
    """The unit a lab code records its values in (last ``//`` segment of LAB codes)."""
    from fedehr.shared.tokenizer.mapping import normalise_unit

    parts = code.split("//")
    if code.startswith(("LAB//", "LOINC/")) and len(parts) >= 2:
        return normalise_unit(parts[-1])
    return None


def _keep_unit(concept: Concept, unit: str, index: CodeIndex) -> Concept:
    from fedehr.shared.tokenizer.mapping import normalise_unit

    wanted = normalise_unit(unit)
    units = {c: code_unit(c, index) for c in concept.codes}
    keep = [c for c in concept.codes if units[c] is None or units[c] == wanted]
    if not keep:
        have = ", ".join(sorted({u for u in units.values() if u}))
        raise ConfigError(f"{concept.phrase} is recorded in {have}, not {unit}", where="prompt",
                          fix=f"give the threshold in {have}")
    return Concept(concept.phrase, tuple(keep),
                   tuple(d for c, d in zip(concept.codes, concept.descriptions, strict=True)
                         if c in keep))
