"""How a hospital writes down what happened: diagnosis coding habits, lab codes and units.

Three diagnosis coding habits (completeness per condition kind, and how often
the catch-all "unspecified" ICD-10 code is used instead of a specific one):

==============  ========  ======  ==================  ===========
habit           chronic   acute   lab-read secondary  unspecified
==============  ========  ======  ==================  ===========
thorough        0.96      0.98    0.90                0.20
standard        0.85      0.95    0.40                0.35
unspecified     0.82      0.93    0.30                0.85
==============  ========  ======  ==================  ===========

A site with `local_codes` reports labs under its own codes and SI units
(``LAB//CREAT_S//umol/L``), has no LOINC parents in its codes.parquet, and
comes with a harmonisation map (`harmonisation_map`) that a later step can
use to map it back onto the LOINC concepts the other sites use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedehr.shared.data.synth.catalog import (
    CONDITIONS,
    LABS,
    Condition,
    icd_event_code,
    icd_parent,
)
from fedehr.shared.data.synth.patients import Cohort


@dataclass(frozen=True)
class CodingHabit:
    chronic: float  # P(a present chronic condition is coded at a stay)
    acute: float
    secondary: float
    unspecified: float  # P(the unspecified code is used when a specific one exists)


HABITS: dict[str, CodingHabit] = {
    "thorough": CodingHabit(chronic=0.96, acute=0.98, secondary=0.90, unspecified=0.20),
    "standard": CodingHabit(chronic=0.85, acute=0.95, secondary=0.40, unspecified=0.35),
    "unspecified": CodingHabit(chronic=0.82, acute=0.93, secondary=0.30, unspecified=0.85),
}


def code_diagnoses(rng: np.random.Generator, cohort: Cohort,
                   habit: CodingHabit) -> tuple[np.ndarray, np.ndarray]:
    """Diagnoses a coder assigns at discharge: (stay index, dotted ICD-10-CM code) arrays.

    Each present condition is coded with the habit's completeness for its
    kind; the code is the unspecified one with probability `habit.unspecified`,
    else a specific one (diabetes with CKD only when the patient has CKD).
    """
    m = cohort.n_stays
    stays, codes = [], []
    for cond in CONDITIONS:
        keep = {"chronic": habit.chronic, "acute": habit.acute,
                "secondary": habit.secondary}[cond.kind]
        present = cohort.has(cond.key) & (rng.random(m) < keep)
        choice = _choose_codes(rng, cond, cohort, habit, m)
        stays.append(np.flatnonzero(present))
        codes.append(choice[present])
    return np.concatenate(stays), np.concatenate(codes)


def _choose_codes(rng: np.random.Generator, cond: Condition, cohort: Cohort,
                  habit: CodingHabit, m: int) -> np.ndarray:
    options = np.array([code for code, _ in cond.all_codes()], dtype=object)
    if not cond.specific:
        return np.full(m, options[0], dtype=object)
    which = 1 + rng.integers(0, len(cond.specific), m)
    if cond.key == "dm":  # E11.22 (with diabetic CKD) needs CKD; else E11.65
        which = np.where(cohort.has("ckd"), 2, 1)
    which = np.where(rng.random(m) < habit.unspecified, 0, which)
    return options[which]


def diagnosis_vocabulary() -> tuple[list[str], list[str], list[list[str]]]:
    """Every diagnosis event code with its ICD-10-CM description and parent."""
    codes, descs, parents = [], [], []
    for cond in CONDITIONS:
        for dotted, desc in cond.all_codes():
            codes.append(icd_event_code(dotted))
            descs.append(desc)
            parents.append([icd_parent(dotted)])
    return codes, descs, parents


@dataclass(frozen=True)
class LabCoding:
    """How one site reports each lab of `catalog.LABS` (same order)."""

    codes: tuple[str, ...]
    descriptions: tuple[str, ...]
    parents: tuple[list[str] | None, ...]
    units: tuple[str, ...]
    factors: np.ndarray  # standard value * factor = reported value
    decimals: np.ndarray

    def report(self, lab: np.ndarray, standard_value: np.ndarray) -> np.ndarray:
        """Standard-unit values -> this site's units, rounded as its lab reports them."""
        scale = 10.0 ** self.decimals[lab]
        return np.round(standard_value * self.factors[lab] * scale) / scale


def lab_coding(local_codes: bool) -> LabCoding:
    if local_codes:
        return LabCoding(
            codes=tuple(lab.local_event_code() for lab in LABS),
            descriptions=tuple(lab.local_name for lab in LABS),
            parents=tuple(None for _ in LABS),
            units=tuple(lab.local_unit for lab in LABS),
            factors=np.array([lab.to_local for lab in LABS]),
            decimals=np.array([lab.local_decimals for lab in LABS]),
        )
    return LabCoding(
        codes=tuple(lab.standard_code() for lab in LABS),
        descriptions=tuple(lab.loinc_name for lab in LABS),
        parents=tuple([f"LOINC/{lab.loinc}"] for lab in LABS),
        units=tuple(lab.unit for lab in LABS),
        factors=np.ones(len(LABS)),
        decimals=np.array([lab.decimals for lab in LABS]),
    )


def harmonisation_map(site: str) -> dict:
    """The true local -> LOINC mapping of a local-codes site, as written to
    ``<out>/<site>.harmonisation.yaml``.

    ``code_map`` maps each local lab code to the LOINC parent the standard
    sites use; ``unit_conversions`` says how to turn a local value into the
    standard code's unit (``standard = local * multiply_by``). Strictly, LOINC
    has separate molar codes (creatinine in umol/L is 14682-9); the map targets
    the mass-unit concept with a conversion so that every site's values land on
    one code.
    """
    code_map, conversions = {}, {}
    for lab in LABS:
        local = lab.local_event_code()
        code_map[local] = f"LOINC/{lab.loinc}"
        conversions[local] = {
            "to_code": lab.standard_code(),
            "from_unit": lab.local_unit,
            "to_unit": lab.unit,
            "multiply_by": float(round(1.0 / lab.to_local, 6)),
        }
    return {"site": site, "code_map": code_map, "unit_conversions": conversions}
