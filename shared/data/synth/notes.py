"""Discharge summaries written from a stay's own events.

A summary names every condition the patient truly has (chronic history,
acute problems, lab-read complications), so it mentions each coded diagnosis
and sometimes one the coder missed; it quotes abnormal lab values exactly as
they are in the record (the site's units and rounding), the ICU stay, the
drugs given and the disposition. Nothing in it is invented beyond the
patient's simulated truth, so a note encoder gets real, partly redundant signal.
"""

from __future__ import annotations

import numpy as np

from fedehr.shared.data.synth.catalog import ACUTE, CHRONIC, CONDITION, LAB, LAB_INDEX, SECONDARY
from fedehr.shared.data.synth.coding import LabCoding
from fedehr.shared.data.synth.patients import (
    ADMISSION_TYPES,
    DAY_US,
    DISPOSITIONS,
    ICU_UNITS,
    LOCATIONS,
    Cohort,
)

SOURCE_WORDS = {
    "EMERGENCY_ROOM": "through the emergency department",
    "PHYSICIAN_REFERRAL": "on physician referral",
    "TRANSFER_FROM_HOSPITAL": "as a transfer from another hospital",
    "CLINIC_REFERRAL": "from clinic",
}
DISPOSITION_WORDS = {
    "HOME": "home",
    "HOME_HEALTH": "home with home health services",
    "SNF": "to a skilled nursing facility",
    "REHAB": "to inpatient rehabilitation",
}
ICU_WORDS = {"MICU": "the medical ICU", "SICU": "the surgical ICU", "CCU": "the cardiac care unit"}

# (lab, statistic, test on the standard value, sentence template)
LAB_FINDINGS = (
    ("creatinine", "max", lambda first, peak: peak > 1.3 and peak - first >= 0.3,
     "{name} rose to {peak} {unit} from {first} {unit}"),
    ("creatinine", "max", lambda first, peak: peak > 1.3 and peak - first < 0.3,
     "{name} was elevated at {peak} {unit}"),
    ("lactate", "max", lambda first, peak: peak >= 2.0, "{name} peaked at {peak} {unit}"),
    ("wbc", "max", lambda first, peak: peak > 12.0, "{name} count was up to {peak} {unit}"),
    ("glucose", "max", lambda first, peak: peak > 200.0, "{name} reached {peak} {unit}"),
    ("bnp", "max", lambda first, peak: peak > 400.0, "{name} was {peak} {unit}"),
    ("sodium", "min", lambda first, low: low < 133.0, "{name} fell to {peak} {unit}"),
    ("potassium", "max", lambda first, peak: peak > 5.3, "{name} was up to {peak} {unit}"),
    ("hemoglobin", "min", lambda first, low: low < 10.0, "{name} nadir was {peak} {unit}"),
)


def _lab_stats(cohort: Cohort, reported: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per stay and lab: first, max and min, in standard and reported units (NaN if not drawn)."""
    labs, m = cohort.labs, cohort.n_stays
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in dict.fromkeys(f[0] for f in LAB_FINDINGS):
        sel = np.flatnonzero(labs.lab == LAB_INDEX[key])
        sel = sel[np.lexsort((labs.time[sel], labs.stay[sel]))]
        stay = labs.stay[sel]
        stats: dict[str, np.ndarray] = {}
        for unit, values in (("std", labs.value[sel]), ("rep", reported[sel])):
            first = np.full(m, np.nan)
            _, first_pos = np.unique(stay, return_index=True)
            first[stay[first_pos]] = values[first_pos]
            hi = np.full(m, -np.inf)
            lo = np.full(m, np.inf)
            np.maximum.at(hi, stay, values)
            np.minimum.at(lo, stay, values)
            stats[f"first_{unit}"], stats[f"max_{unit}"], stats[f"min_{unit}"] = first, hi, lo
        out[key] = stats
    return out


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def discharge_summaries(cohort: Cohort, reported: np.ndarray, coding: LabCoding,
                        drugs_by_stay: list[list[str]]) -> list[str]:
    """One discharge summary per stay (same order as the cohort's stays)."""
    stats = _lab_stats(cohort, reported)
    present = {key: cohort.has(key) for key in (*CHRONIC, *ACUTE, *SECONDARY)}
    out = []
    for i in range(cohort.n_stays):
        p = cohort.patient[i]
        sex = "woman" if cohort.female[p] else "man"
        kind = ADMISSION_TYPES[cohort.admission_type[i]].lower()
        source = SOURCE_WORDS[LOCATIONS[cohort.location[i]]]
        days = max(1, int(np.ceil((cohort.discharge[i] - cohort.admit[i]) / DAY_US)))
        lines = [
            "DISCHARGE SUMMARY",
            f"{int(cohort.age[i])}-year-old {sex} admitted ({kind}) {source}.",
        ]
        history = [CONDITION[k].term for k in CHRONIC if present[k][i]]
        lines.append("Past medical history: "
                     + (_join(history) if history else "no significant history") + ".")
        acute = [CONDITION[k].term for k in ACUTE if present[k][i]]
        if acute:
            lines.append(f"Hospital course: treated for {_join(acute)}.")
        elif kind == "elective":
            lines.append("Hospital course: elective admission for a planned procedure.")
        else:
            lines.append("Hospital course: admitted for evaluation and monitoring.")
        if cohort.icu[i]:
            icu_day = int((cohort.icu_in[i] - cohort.admit[i]) // DAY_US) + 1
            lines.append(f"Transferred to {ICU_WORDS[ICU_UNITS[cohort.icu_unit[i]]]} "
                         f"on hospital day {icu_day}.")
        findings = []
        for key, stat, test, template in LAB_FINDINGS:
            s = stats[key]
            std = s[f"{stat}_std"][i]
            if not np.isfinite(std) or not test(s["first_std"][i], std):
                continue
            dec = int(coding.decimals[LAB_INDEX[key]])
            findings.append(template.format(
                name=LAB[key].name, unit=coding.units[LAB_INDEX[key]],
                peak=f"{s[f'{stat}_rep'][i]:.{dec}f}", first=f"{s['first_rep'][i]:.{dec}f}"))
        if findings:
            lines.append(". ".join(f[0].upper() + f[1:] for f in findings) + ".")
        secondary = [CONDITION[k].term for k in SECONDARY if present[k][i]]
        if secondary:
            lines.append(f"Course complicated by {_join(secondary)}.")
        if drugs_by_stay[i]:
            lines.append(f"Medications given: {_join(drugs_by_stay[i])}.")
        disposition = DISPOSITIONS[cohort.disposition[i]]
        if disposition == "DIED":
            lines.append(f"The patient died on hospital day {days}.")
        else:
            lines.append(f"Discharged {DISPOSITION_WORDS[disposition]} after {days} days.")
        out.append("\n".join(lines))
    return out

