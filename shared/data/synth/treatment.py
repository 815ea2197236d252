"""Which drugs a stay gets and when: guideline-shaped rules over the patient's conditions.

Each drug is given at a stay with a probability that depends on the
conditions it treats (metformin for diabetes without CKD, vancomycin for
sepsis, furosemide for heart failure or effusion, norepinephrine for septic
patients in the ICU, ...). One administration event per drug and stay, a few
hours after admission (antibiotics within 1-4 h, vasopressors after ICU
transfer), always before discharge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedehr.shared.data.synth.catalog import DRUGS
from fedehr.shared.data.synth.patients import HOUR_US, Cohort

ANTIBIOTICS = ("vancomycin", "ceftriaxone", "azithromycin")


def _rules(c: Cohort) -> dict[str, np.ndarray]:
    """Per drug: the probability each stay gets it."""
    has = c.has
    z = c.severity
    return {
        "metformin": np.where(has("dm"), np.where(has("ckd"), 0.15, 0.7), 0.0),
        "insulin glargine": 0.4 * has("dm"),
        "lisinopril": np.where(has("htn") & ~has("aki"), 0.5, 0.0),
        "amlodipine": 0.4 * has("htn"),
        "atorvastatin": 0.7 * has("hld"),
        "furosemide": np.maximum(0.8 * has("hf"), 0.5 * has("effusion")),
        "carvedilol": 0.6 * has("hf"),
        "tiotropium": 0.6 * has("copd"),
        "albuterol": np.maximum(0.8 * has("copd"), 0.2 * has("pneumonia")),
        "prednisone": np.where(has("copd") & (has("pneumonia") | (z > 0.5)), 0.6, 0.0),
        "vancomycin": 0.8 * has("sepsis"),
        "ceftriaxone": 0.8 * (has("pneumonia") | has("sepsis")),
        "azithromycin": 0.6 * has("pneumonia"),
        "norepinephrine": 0.7 * (has("sepsis") & c.icu),
        "heparin": np.full(c.n_stays, 0.6),
        "acetaminophen": np.full(c.n_stays, 0.5),
    }


@dataclass
class Administrations:
    stay: np.ndarray
    drug: np.ndarray  # index into catalog.DRUGS
    time: np.ndarray  # int64 us


def administer(rng: np.random.Generator, cohort: Cohort) -> Administrations:
    rules = _rules(cohort)
    stays, drugs, times = [], [], []
    for d, drug in enumerate(DRUGS):
        sel = np.flatnonzero(rng.random(cohort.n_stays) < rules[drug.name])
        if drug.name == "norepinephrine":
            room = cohort.icu_out[sel] - cohort.icu_in[sel]
            t = cohort.icu_in[sel] + (rng.uniform(0.1, 0.5, len(sel)) * room).astype(np.int64)
        else:
            lo, hi = (1.0, 4.0) if drug.name in ANTIBIOTICS else (0.5, 6.0)
            t = cohort.admit[sel] + (rng.uniform(lo, hi, len(sel)) * HOUR_US).astype(np.int64)
        stays.append(sel)
        drugs.append(np.full(len(sel), d))
        times.append(t)
    return Administrations(np.concatenate(stays), np.concatenate(drugs), np.concatenate(times))


def drugs_by_stay(admin: Administrations, n_stays: int) -> list[list[str]]:
    """Generic names given at each stay, in catalog order."""
    out: list[list[str]] = [[] for _ in range(n_stays)]
    for s, d in zip(admin.stay.tolist(), admin.drug.tolist(), strict=True):
        out[s].append(DRUGS[d].name)
    return out
