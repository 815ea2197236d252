"""MIMIC-IV's local spellings of shared events, rewritten to the consortium's event codes.

The public anchor (MIMIC-IV in MEDS form) writes admissions, care units,
discharge dispositions and drug administrations in MIMIC's own words
(``HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM``, ``ICU_ADMISSION//Medical
Intensive Care Unit (MICU)``, ``MEDICATION//Heparin//Administered``), while the
sites write ``HOSPITAL_ADMISSION//EMERGENCY//EMERGENCY_ROOM``,
``ICU_ADMISSION//MICU`` and RxNorm ingredients. Without this step only 36 of
the 76 codes the synthetic sites use were anchor tokens (issue 12), so the warm
start trained embeddings the sites never read and left theirs untouched.

`standard_code` is the mapping's second step (after a site's own code_map,
before parent codes): it applies to every dataset, so the anchor, a site
running the MIMIC-IV ETL and `fedehr model ask` on a MIMIC patient all meet the
same tokens. What has no counterpart in the consortium's codes stays as it is:
observation admissions, step-down units, prescriptions (``MEDICATION//START//``:
an order, not an administration), held or refused doses, NT-proBNP (another
analyte than BNP).
"""

from __future__ import annotations

import re

VERSION = "mimic-iv-spellings/1"  # part of the mapping's hash: bump when a table changes

ADMISSION_TYPES = {
    "EW EMER.": "EMERGENCY", "DIRECT EMER.": "EMERGENCY", "URGENT": "URGENT",
    "ELECTIVE": "ELECTIVE", "SURGICAL SAME DAY ADMISSION": "ELECTIVE",
}
ADMISSION_LOCATIONS = {
    "EMERGENCY ROOM": "EMERGENCY_ROOM", "PHYSICIAN REFERRAL": "PHYSICIAN_REFERRAL",
    "TRANSFER FROM HOSPITAL": "TRANSFER_FROM_HOSPITAL", "CLINIC REFERRAL": "CLINIC_REFERRAL",
}
DISPOSITIONS = {
    "HOME": "HOME", "HOME HEALTH CARE": "HOME_HEALTH", "SKILLED NURSING FACILITY": "SNF",
    "REHAB": "REHAB", "DIED": "DIED",
}
# Care units by the patients they take: cardiac surgery and neurosurgery are surgical ICUs,
# the mixed unit is counted as medical (most of its patients are).
CARE_UNITS = {
    "Medical Intensive Care Unit (MICU)": "MICU",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)": "MICU",
    "Surgical Intensive Care Unit (SICU)": "SICU",
    "Trauma SICU (TSICU)": "SICU",
    "Neuro Surgical Intensive Care Unit (Neuro SICU)": "SICU",
    "Cardiac Vascular Intensive Care Unit (CVICU)": "SICU",
    "Coronary Care Unit (CCU)": "CCU",
}
# Lactate measured on the blood gas analyser (MIMIC item 50813, LOINC 32693-4 for whole
# blood) is the lactate the sites report as LOINC 2524-7; same analyte and unit.
LABS = {"LAB//50813//mmol/L": "LOINC/2524-7//mmol/L"}

# RxNorm ingredient concepts (RxCUI) by the generic name a MIMIC-IV eMAR entry starts with.
INGREDIENTS = {
    "metformin": "6809", "insulin glargine": "274783", "lisinopril": "29046",
    "amlodipine": "17767", "atorvastatin": "83367", "furosemide": "4603",
    "carvedilol": "20352", "tiotropium": "69120", "albuterol": "435", "prednisone": "8640",
    "vancomycin": "11124", "ceftriaxone": "2193", "azithromycin": "18631",
    "norepinephrine": "7512", "heparin": "5224", "acetaminophen": "161",
}
GIVEN = {"Administered", "Delayed Administered", "Confirmed"}  # eMAR: the dose was given
NOT_THE_DRUG = ("flush",)  # a heparin line flush is not anticoagulation

_EMAR = re.compile(r"^MEDICATION//([^/]+)//([^/]+)$")
_NAMES = "|".join(re.escape(n) for n in sorted(INGREDIENTS, key=len, reverse=True))
_INGREDIENT = re.compile(rf"^({_NAMES})\b")


def standard_code(code: str) -> str | None:
    """The consortium's code for a MIMIC-IV spelling, or None when `code` is not one."""
    kind, _, rest = code.partition("//")
    if kind == "HOSPITAL_ADMISSION":
        admission_type, _, location = rest.partition("//")
        if admission_type in ADMISSION_TYPES and location in ADMISSION_LOCATIONS:
            return (f"HOSPITAL_ADMISSION//{ADMISSION_TYPES[admission_type]}"
                    f"//{ADMISSION_LOCATIONS[location]}")
    elif kind == "HOSPITAL_DISCHARGE" and rest in DISPOSITIONS:
        return f"HOSPITAL_DISCHARGE//{DISPOSITIONS[rest]}"
    elif kind in ("ICU_ADMISSION", "ICU_DISCHARGE") and rest in CARE_UNITS:
        return f"{kind}//{CARE_UNITS[rest]}"
    elif kind == "MEDICATION":
        return _administered_ingredient(code)
    return LABS.get(code)


def _administered_ingredient(code: str) -> str | None:
    match = _EMAR.match(code)
    if match is None or match.group(2) not in GIVEN:
        return None
    name = " ".join(match.group(1).lower().split())
    if any(word in name for word in NOT_THE_DRUG):
        return None
    found = _INGREDIENT.match(name)
    return f"RxNorm/{INGREDIENTS[found.group(1)]}" if found else None
