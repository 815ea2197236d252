"""The site's privacy ledger: Opacus' accountant history, persisted at the site.

Every release a site makes from its private data is charged here: the DP-SGD
steps of each training round and the noisy code counts of the vocabulary round
alike. The ledger is the accountant of record. It stores each charge as the
triple Opacus' accountants compose, ``(noise_multiplier, sample_rate, steps)``,
in a JSON file beside the site's data, so epsilon accumulates over rounds,
runs and process restarts and is never reset: there is no API that removes an
entry, and an unreadable ledger is an error, never a fresh start.

Accounting (following Opacus' ``accountants/``, whose mathematics we reuse):

- ``accountant="rdp"`` (default) composes in Rényi DP (Mironov 2017; Mironov,
  Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
  Mechanism") with Opacus' `RDPAccountant`; ``"prv"`` uses `PRVAccountant`
  (Gopi, Lee, Wutschitz 2021, "Numerical Composition of Differential Privacy"),
  which is tighter but slower. The choice and delta are fixed when the ledger
  is created: reopening it with another delta or accountant is a ConfigError,
  because epsilon spent under one cannot be re-expressed under the other.
- A Gaussian release of counts (the vocabulary round) is one step of the same
  mechanism with ``sample_rate=1.0`` and ``noise_multiplier = noise std / L2
  sensitivity``, so it composes with the DP-SGD steps in the same accountant.

Idempotency: a charge may carry a ``round_id``. Charging a round_id that is
already on the books with the same parameters is a no-op that returns the
existing entry, so a federation resumed after a crash never charges a finished
round twice. The same round_id with different parameters is a ConfigError: it
would be a second, different release under the same name. (The trainer refuses
to train a round that is already charged: re-training would be a new release.)

Identity and trust: a ledger belongs to a set of patients. `patients_fingerprint`
hashes the sorted subject ids, so a re-import of the same patients (new
``created_at``, new file bytes) finds the same ledger. Epsilon spent is always
recomputed from the entries' mechanisms; the ``epsilon_after`` and
``epsilon_spent`` stored in the file are for human readers and are never
believed (`stored_totals_disagree` lists the ones that were edited).

Writes are atomic (`fedehr.shared.atomic.write_text`): a crash mid-write leaves
the previous ledger. Concurrent processes on one host serialise their charges
with an advisory lock (``<ledger>.lock``) and re-read the file under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedehr.shared.atomic import write_text
from fedehr.shared.errors import ConfigError, DataError
from fedehr.shared.privacy.accounting import (  # noqa: F401  (re-exported)
    ACCOUNTANTS,
    BudgetExceededError,
    History,
    check_mechanism,
    epsilon_of,
    make_accountant,
    noise_multiplier_for,
)

FORMAT = "fedehr-privacy-ledger"
VERSION = 1
PURPOSES = ("dp-sgd", "vocab-release", "metric-release")

@dataclass(frozen=True)
class LedgerEntry:
    """One charge: `steps` compositions of the Poisson-subsampled Gaussian mechanism."""

    purpose: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    round_id: str | None
    charged_at: str
    epsilon_after: float  # cumulative epsilon at the ledger's delta once this entry counted

    @property
    def mechanism(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PrivacyLedger:
    """The privacy spent by one site, at one delta, under one accountant.

    Open with `PrivacyLedger.open`; the constructor is internal.
    """

    def __init__(self, path: Path, *, epsilon_budget: float, delta: float, accountant: str,
                 entries: list[LedgerEntry], created_at: str,
                 budget_changes: list[dict[str, Any]], patients: str | None = None,
                 activity_offset: int = 0):
        self._path = path
        self._patients = patients  # patients_fingerprint of the data it accounts for
        # Events of the site's activity log before this ledger existed (a ledger
        # restarted with privacy.new_ledger: true is not checked against them).
        self._activity_offset = int(activity_offset)
        self._spent_cache: tuple[int, float] | None = None
        self._budget = float(epsilon_budget)
        self._delta = float(delta)
        self._accountant = accountant
        self._entries = list(entries)
        self._created_at = created_at
        self._budget_changes = list(budget_changes)

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, epsilon_budget: float, delta: float,
             accountant: str = "rdp", patients: str | None = None,
             activity_offset: int = 0) -> PrivacyLedger:
        """Open the ledger at `path`, creating it (and writing it at once) if absent.

        `epsilon_budget` is the site's current policy and may change between
        openings (the change is recorded); `delta` and `accountant` are fixed at
        creation and a mismatch is a ConfigError. `patients` and
        `activity_offset` are recorded when the ledger is created.
        """
        path = Path(path)
        where = str(path)
        if not (epsilon_budget > 0 and math.isfinite(epsilon_budget)):
            raise ConfigError(f"epsilon budget must be a positive number, got {epsilon_budget}",
                              where=where, fix="set the site's epsilon budget, e.g. 8")
        if not 0 < delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {delta}", where=where,
                              fix="use delta well below 1/number of patients, e.g. 1e-5")
        if accountant not in ACCOUNTANTS:
            raise ConfigError(f"unknown accountant {accountant!r}", where=where,
                              fix=f"use one of {', '.join(ACCOUNTANTS)}")
        with _locked(path):
            if not path.exists():
                ledger = cls(path, epsilon_budget=epsilon_budget, delta=delta,
                             accountant=accountant, entries=[], created_at=_now(),
                             budget_changes=[], patients=patients,
                             activity_offset=activity_offset)
                ledger._write(ledger._entries, ledger._budget_changes)
                return ledger
            ledger = cls._read(path)
            if ledger._delta != float(delta):
                raise ConfigError(
                    f"the ledger was kept at delta={ledger._delta:g}, not delta={delta:g}",
                    where=where, fix=f"use delta={ledger._delta:g}; epsilon spent at one delta "
                    "cannot be carried to another, and a ledger is never reset")
            if ledger._accountant != accountant:
                raise ConfigError(
                    f"the ledger was kept with the {ledger._accountant!r} accountant, "
                    f"not {accountant!r}", where=where,
                    fix=f"use accountant={ledger._accountant!r} for this site")
            if ledger._budget != float(epsilon_budget):
                changes = [*ledger._budget_changes, {"from": ledger._budget,
                                                     "to": float(epsilon_budget), "at": _now()}]
                ledger._budget = float(epsilon_budget)
                ledger._write(ledger._entries, changes)
                ledger._budget_changes = changes
            return ledger

    @classmethod
    def read(cls, path: str | os.PathLike) -> PrivacyLedger | None:
        """The ledger as it is on disk, or None if there is none; writes nothing (for
        read-only commands such as `fedehr site status` and `site check`)."""
        path = Path(path)
        return cls._read(path) if path.exists() else None

    @classmethod
    def _read(cls, path: Path) -> PrivacyLedger:
        where = str(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            if doc.get("version") != VERSION:
                raise ValueError(f"unsupported ledger version {doc.get('version')!r}")
            entries = [LedgerEntry(purpose=e["purpose"],
                                   noise_multiplier=float(e["noise_multiplier"]),
                                   sample_rate=float(e["sample_rate"]), steps=int(e["steps"]),
                                   round_id=e.get("round_id"), charged_at=e["charged_at"],
                                   epsilon_after=float(e["epsilon_after"]))
                       for e in doc["entries"]]
            return cls(path, epsilon_budget=float(doc["epsilon_budget"]),
                       delta=float(doc["delta"]), accountant=str(doc["accountant"]),
                       entries=entries, created_at=str(doc["created_at"]),
                       budget_changes=list(doc.get("budget_changes", [])),
                       patients=doc.get("patients"),
                       activity_offset=int(doc.get("activity_offset", 0)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the privacy ledger ({exc})", where=where,
                            fix="restore the ledger from backup; never delete it, since "
                            "that would reset the privacy spent at this site") from exc

    def _write(self, entries: list[LedgerEntry], budget_changes: list[dict[str, Any]]) -> None:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "accountant": self._accountant,
            "delta": self._delta,
            "epsilon_budget": self._budget,
            "created_at": self._created_at,
            "patients": self._patients,
            "activity_offset": self._activity_offset,
            "budget_changes": budget_changes,
            # for readers only: spent() recomputes from the entries and ignores this
            "epsilon_spent": entries[-1].epsilon_after if entries else 0.0,
            "entries": [asdict(e) for e in entries],
        }
        write_text(self._path, json.dumps(doc, indent=2) + "\n")

    # -- reading -------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def epsilon_budget(self) -> float:
        return self._budget

    @property
    def delta(self) -> float:
        return self._delta

    @property
    def accountant(self) -> str:
        """The accountant's name, as Opacus calls its mechanism ("rdp" or "prv")."""
        return self._accountant

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def history(self) -> History:
        """The charges as Opacus' accountant history ``[(noise, sample_rate, steps)]``."""
        return [e.mechanism for e in self._entries if e.steps > 0]

    def accountant_state(self) -> dict[str, Any]:
        """Opacus' accountant `state_dict()` form (for `PrivacyEngine.accountant`)."""
        return {"history": self.history, "mechanism": self._accountant}

    @property
    def patients(self) -> str | None:
        return self._patients

    @property
    def activity_offset(self) -> int:
        return self._activity_offset

    def spent(self) -> float:
        """Epsilon spent so far at the ledger's delta, under its accountant, recomputed
        from the entries (a stored total or ``epsilon_after`` is never believed)."""
        if self._spent_cache is None or self._spent_cache[0] != len(self._entries):
            self._spent_cache = (len(self._entries), self.spent_by(self._entries))
        return self._spent_cache[1]

    def spent_by(self, entries) -> float:
        """Epsilon of these entries' charges alone, composed under the ledger's accountant."""
        history = [e.mechanism for e in entries if e.steps > 0]
        return epsilon_of(history, delta=self._delta, accountant=self._accountant) \
            if history else 0.0

    def stored_totals_disagree(self) -> list[LedgerEntry]:
        """Entries whose stored ``epsilon_after`` differs from the recomputation (edited)."""
        return [e for i, e in enumerate(self._entries)
                if not math.isclose(e.epsilon_after, self.spent_by(self._entries[:i + 1]),
                                    rel_tol=1e-6, abs_tol=1e-9)]

    def remaining(self) -> float:
        """Budget left, in epsilon (0 when spent; epsilons do not add, so this is a
        distance to the budget, not an amount that any release can use up exactly)."""
        return max(0.0, self._budget - self.spent())

    def epsilon_after(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Cumulative epsilon if this release were charged (computed on a copy)."""
        check_mechanism(noise_multiplier, sample_rate, steps)
        return epsilon_of([*self.history, (noise_multiplier, sample_rate, int(steps))],
                          delta=self._delta, accountant=self._accountant)

    def would_exceed(self, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        return self.epsilon_after(noise_multiplier, sample_rate, steps) > self._budget

    def check(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Raise BudgetExceededError if the release would pass the budget; else return
        the cumulative epsilon it would bring the site to."""
        after = self.epsilon_after(noise_multiplier, sample_rate, steps)
        if after > self._budget:
            raise BudgetExceededError(
                f"privacy budget exceeded: spent epsilon={self.spent():.3f}, this request "
                f"({steps} steps, noise multiplier {noise_multiplier:.3g}, sample rate "
                f"{sample_rate:.3g}) would bring it to {after:.3f}, over the budget "
                f"{self._budget:g} at delta={self._delta:g} ({self._accountant})",
                where=str(self._path),
                fix="train fewer steps, raise the noise multiplier, or raise the site's "
                "epsilon budget deliberately")
        return after

    def has_round(self, round_id: str) -> bool:
        return any(e.round_id == round_id for e in self._entries)

    def entry_for(self, round_id: str) -> LedgerEntry | None:
        return next((e for e in self._entries if e.round_id == round_id), None)

    def summary(self) -> dict[str, Any]:
        """What the model card records for this site."""
        return {"epsilon": self.spent(), "delta": self._delta, "accountant": self._accountant,
                "epsilon_budget": self._budget, "charges": len(self._entries),
                "steps": sum(e.steps for e in self._entries),
                "history": [list(h) for h in self.history]}  # to recompute epsilon

    def noise_for_budget(self, sample_rate: float, steps: int, *,
                         target_epsilon: float | None = None, tolerance: float = 0.01) -> float:
        """The noise multiplier that brings the site's *cumulative* epsilon to
        `target_epsilon` (default: the whole budget) after `steps` more steps."""
        target = self._budget if target_epsilon is None else float(target_epsilon)
        if target > self._budget:
            raise BudgetExceededError(
                f"target epsilon {target:g} is above the site budget {self._budget:g}",
                where=str(self._path), fix="lower the target epsilon")
        return noise_multiplier_for(target, delta=self._delta, sample_rate=sample_rate,
                                    steps=steps, accountant=self._accountant,
                                    prior=self.history, tolerance=tolerance)

    # -- charging ------------------------------------------------------------

    def charge(self, noise_multiplier: float, sample_rate: float, steps: int, *, purpose: str,
               round_id: str | None = None, enforce: bool = True) -> LedgerEntry:
        """Record a release and persist the ledger before returning.

        With `enforce` (default) a release past the budget raises
        BudgetExceededError and records nothing. The trainer charges steps that
        already happened with ``enforce=False``: a release that happened must be
        on the books even if it overran (it checked the budget before training).
        """
        if purpose not in PURPOSES:
            raise ConfigError(f"unknown purpose {purpose!r}", where=str(self._path),
                              fix=f"use one of {', '.join(PURPOSES)}")
        check_mechanism(noise_multiplier, sample_rate, steps)
        with _locked(self._path):
            self._reload()
            if round_id is not None and (old := self.entry_for(round_id)) is not None:
                same = (old.purpose, *old.mechanism) == (purpose, float(noise_multiplier),
                                                         float(sample_rate), int(steps))
                if same:
                    return old
                raise ConfigError(
                    f"round {round_id!r} is already charged ({old.purpose}, {old.steps} steps, "
                    f"noise {old.noise_multiplier:.4g}, sample rate {old.sample_rate:.4g}); "
                    "a different release under the same round id", where=str(self._path),
                    fix="give a new release a new round id")
            after = (self.check if enforce else self.epsilon_after)(
                noise_multiplier, sample_rate, steps)
            entry = LedgerEntry(purpose=purpose, noise_multiplier=float(noise_multiplier),
                                sample_rate=float(sample_rate), steps=int(steps),
                                round_id=round_id, charged_at=_now(), epsilon_after=after)
            entries = [*self._entries, entry]
            self._write(entries, self._budget_changes)  # memory changes only once on disk
            self._entries = entries
            return entry

    def _reload(self) -> None:
        """Pick up charges another process wrote since we opened (under the lock)."""
        if self._path.exists():
            disk = self._read(self._path)
            if len(disk._entries) > len(self._entries):
                self._entries = disk._entries


def patients_fingerprint(subject_ids) -> str:
    """The identity of a set of patients: SHA-256 of the sorted, distinct subject ids.

    Metadata (``created_at``, the dataset's name, shard layout) does not enter, so
    a re-import of the same patients gets the same fingerprint and the same ledger.
    """
    digest = hashlib.sha256(b"fedehr-patients-v1\n")
    for subject in sorted({int(s) for s in subject_ids}):
        digest.update(b"%d\n" % subject)
    return "patients-" + digest.hexdigest()[:32]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock beside the ledger, held for one read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
