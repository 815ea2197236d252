"""What the page works on: one checkpoint, one MEDS dataset, the site's audit log.

The clinical work is the same code `fedehr model ask` runs (prompt.py to
resolve, zero_shot.predict_detailed to sample, explain.explain to attribute),
called with the same defaults, so the page and the command give the same
probability for the same seed. A checkpoint that fails verification does not
stop the page: the model page shows why in red and questions are refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from fedehr.shared.audit import AuditLog
from fedehr.shared.errors import DataError, FedEHRError

BATCH_ROWS = 256  # `fedehr model ask --batch-size` default: same batches, same answer


@dataclass
class Settings:
    checkpoint: Path
    data: Path
    audit_log: Path
    trusted_key: Path | None = None
    user: str = "local user"  # who asks, as the audit log records it
    token: str | None = None  # the login token; None: no login (loopback only)
    secure_cookie: bool = False  # served over TLS
    samples: int = 32
    explain_groups: int = 8
    report: Path | None = None  # the --out folder of `fedehr model evaluate`, shown on Model


@dataclass
class Resolution:
    """A question resolved to codes, for the user to confirm before sampling."""

    question: str
    resolved: object  # prompt.ResolvedPrompt
    outcome: object  # query.Outcome
    lines: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)  # ambiguous phrase -> family used


class Workspace:
    """The loaded model (when it verifies), the dataset and its code index."""

    def __init__(self, settings: Settings):
        from fedehr.shared.checkpoint import load
        from fedehr.shared.clinical.concepts import CodeIndex
        from fedehr.shared.clinical.zero_shot import open_dataset

        self.settings = settings
        self.dataset = open_dataset(settings.data)
        self.audit = AuditLog(settings.audit_log)
        self.model = self.vocab = None
        self.load_problem: str | None = None
        try:
            self.model, self.vocab, _ = load(settings.checkpoint,
                                             trusted_public_key=settings.trusted_key)
        except FedEHRError as exc:
            self.load_problem = exc.message
        extra = self.vocab.tokens if self.vocab is not None else ()
        self.index = CodeIndex.for_dataset(self.dataset.codes(), extra_codes=extra)
        self.model_lock = threading.Lock()  # one sampling run at a time on the CPU

    # -- questions -------------------------------------------------------------------
    def resolve(self, question: str, choices: dict[str, str] | None = None) -> Resolution:
        """Parse and resolve a question; raises FedEHRError with the reason to show.

        `choices` picks a concept family for an ambiguous phrase (lower-cased phrase ->
        family, as AmbiguousConcept.choices names them); a phrase without a valid pick
        raises the AmbiguousConcept, whose choices the page offers."""
        from fedehr.shared.clinical.concepts import AmbiguousConcept
        from fedehr.shared.clinical.prompt import parse_prompt, resolve_prompt
        from fedehr.shared.clinical.query import outcome_from_task

        self.require_model()
        if not question.strip():
            raise DataError("the question is empty", where="question",
                            fix='type e.g. "death within 30 days after discharge"')
        parsed, choices = parse_prompt(question), choices or {}
        chosen: dict[str, tuple[str, ...]] = {}
        used: dict[str, str] = {}
        while True:  # each pass settles one more ambiguous phrase
            try:
                resolved = resolve_prompt(parsed, self.index.with_choices(chosen))
                break
            except AmbiguousConcept as exc:
                phrase = exc.phrase.lower()
                family = choices.get(phrase)
                if phrase in chosen or family not in exc.choices:
                    raise
                chosen[phrase], used[phrase] = exc.choices[family], family
        outcome = outcome_from_task(resolved.task_config())
        notes = list(self.outcome_tokens(outcome).notes)  # refuses codes outside the vocabulary
        lines = [*resolved.confirmation_lines(), ("compiled window", outcome.clinical_words())]
        return Resolution(question, resolved, outcome, lines, notes, used)

    def outcome_tokens(self, outcome):
        from fedehr.shared.clinical.zero_shot import candidate_codes, outcome_tokens
        from fedehr.shared.tokenizer.mapping import CodeMapping

        mapping = CodeMapping.from_config(None, self.dataset.codes())
        return outcome_tokens(outcome, self.vocab, mapping,
                              candidate_codes(self.dataset, self.vocab))

    def require_model(self) -> None:
        if self.load_problem:
            raise FedEHRError(f"the checkpoint failed verification: {self.load_problem}",
                              where=str(self.settings.checkpoint),
                              fix="see the Model page; use a checkpoint that verifies")

    def prediction_time(self, subject: int, resolution: Resolution) -> datetime:
        """As `fedehr model ask`: the latest index event, or the last event."""
        from fedehr.shared.clinical.query import prediction_time

        return prediction_time(self.dataset, subject, resolution.resolved)

    def patient_label(self, subject: int, resolution: Resolution) -> pl.DataFrame:
        """One patient at its prediction time, as a MEDS label frame of one row."""
        when = self.prediction_time(subject, resolution)
        return pl.DataFrame({"subject_id": [subject], "prediction_time": [when]},
                            schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")})

    def cohort_labels(self, subjects: list[int], resolution: Resolution, *,
                      skip_unplaced: bool = False) -> tuple[pl.DataFrame, list[str]]:
        """Each patient at its prediction time; with `skip_unplaced` (a cohort found by a
        predicate) patients the question cannot place are left out and listed, else refused."""
        if not subjects:
            raise DataError("the cohort is empty", where="patient ids",
                            fix="list at least one subject_id, e.g. 2 4 6")
        placed, times, problems = [], [], []
        for subject in subjects:
            try:
                times.append(self.prediction_time(subject, resolution))
                placed.append(subject)
            except FedEHRError as exc:
                problems.append(exc.message)
        if problems and (not skip_unplaced or not placed):
            shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)"
                                               if len(problems) > 5 else "")
            raise DataError(shown, where="patient ids",
                            fix="remove these patients from the list" if not skip_unplaced
                            else "choose patients who have the question's index event")
        labels = pl.DataFrame({"subject_id": placed, "prediction_time": times},
                              schema={"subject_id": pl.Int64,
                                      "prediction_time": pl.Datetime("us")})
        return labels, problems

    def find_cohort(self, *, code: str, description: str, split: str, limit: int) -> list[int]:
        """Patients by a predicate, as `fedehr site patients` finds them: a code pattern
        (regular expression) and/or words of a code's description, optionally one split."""
        from fedehr.shared.data.patients import find_patients

        if not (code or description):
            raise DataError("the cohort is empty", where="patient ids",
                            fix="list subject_ids, or give a code pattern or description words")
        try:
            found = find_patients(self.settings.data, code=code or None,
                                  description=description or None, split=split or None,
                                  limit=limit)
        except pl.exceptions.PolarsError as exc:
            reason = str(exc).strip().splitlines()[0][:120]
            raise DataError(f"cannot use the code pattern {code!r} ({reason})",
                            where="code pattern",
                            fix="write a regular expression, e.g. ^LAB//2160") from None
        if found.is_empty():
            raise DataError("no patient matches the predicate"
                            + (f" in split {split!r}" if split else ""),
                            where="cohort predicate", fix="try another code, words or split")
        return found["subject_id"].to_list()

    @property
    def splits(self) -> list[str]:
        return self.dataset.splits_present()

    def record_question(self, resolution: Resolution, *, patients: list[int],
                        samples: int, seed: int, predicate: dict | None = None) -> dict:
        """One audit line per question: who, which patients, which checkpoint."""
        from fedehr.shared.checkpoint.format import SIGNATURE
        from fedehr.shared.checkpoint.signing import sha256_file

        signature = Path(self.settings.checkpoint) / SIGNATURE
        return self.audit.append(
            "ui-question", who=self.settings.user, question=resolution.question,
            patients=patients if len(patients) <= 50 else f"{len(patients)} patients",
            cohort_size=len(patients), checkpoint=str(self.settings.checkpoint),
            checkpoint_signature_sha256=sha256_file(signature) if signature.exists() else None,
            samples=samples, seed=seed,
            **({"concepts_chosen": resolution.choices} if resolution.choices else {}),
            **({"cohort_predicate": predicate} if predicate else {}))

    # -- sampling (run in a job thread) ------------------------------------------------
    def answer_one(self, resolution: Resolution, subject: int, *, samples: int, seed: int,
                   explain_groups: int, progress) -> dict:
        from fedehr.shared.clinical.ask_cli import stay_words
        from fedehr.shared.clinical.explain import explain
        from fedehr.shared.clinical.zero_shot import predict_detailed

        labels = self.patient_label(subject, resolution)
        when = labels["prediction_time"][0]
        result = predict_detailed(self.model, self.vocab, self.dataset, labels,
                                  resolution.outcome, samples=samples, seed=seed,
                                  batch_size=BATCH_ROWS, progress=progress)
        row = result.frame.row(0, named=True)
        explanation = None
        if explain_groups and row["decided"]:
            explanation = explain(self.model, self.vocab, result.prompts, 0, resolution.outcome,
                                  result.outcome_tokens, self.index, samples=samples, seed=seed,
                                  max_groups=explain_groups,
                                  max_new_tokens=result.simulation.max_new_tokens,
                                  progress=progress)
        return {"subject": subject, "when": when, "row": row, "explanation": explanation,
                "stay": stay_words(row), "notes": list(result.outcome_tokens.notes),
                "value_words": result.outcome_tokens.value_words,
                "budget": result.simulation.max_new_tokens,
                "seconds": result.simulation.seconds}

    def answer_cohort(self, resolution: Resolution, labels: pl.DataFrame, *, samples: int,
                      seed: int, progress) -> dict:
        from fedehr.shared.clinical.ask_cli import prediction_frame
        from fedehr.shared.clinical.zero_shot import predict_detailed

        result = predict_detailed(self.model, self.vocab, self.dataset, labels,
                                  resolution.outcome, samples=samples, seed=seed,
                                  batch_size=BATCH_ROWS, progress=progress)
        frame = prediction_frame(labels, result.frame)
        counts = result.frame.select("subject_id", "decided", "truncated")
        return {"frame": frame, "decided": counts["decided"].to_list(),
                "notes": list(result.outcome_tokens.notes),
                "seconds": result.simulation.seconds}
