"""MIMIC-IV's spellings meet the sites' codes; what has no counterpart stays as it is."""

from __future__ import annotations

import pytest

from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.mimic_spellings import standard_code


@pytest.mark.parametrize(("mimic", "consortium"), [
    ("HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM",
     "HOSPITAL_ADMISSION//EMERGENCY//EMERGENCY_ROOM"),
    ("HOSPITAL_ADMISSION//SURGICAL SAME DAY ADMISSION//PHYSICIAN REFERRAL",
     "HOSPITAL_ADMISSION//ELECTIVE//PHYSICIAN_REFERRAL"),
    ("HOSPITAL_DISCHARGE//SKILLED NURSING FACILITY", "HOSPITAL_DISCHARGE//SNF"),
    ("ICU_ADMISSION//Medical Intensive Care Unit (MICU)", "ICU_ADMISSION//MICU"),
    ("ICU_DISCHARGE//Trauma SICU (TSICU)", "ICU_DISCHARGE//SICU"),
    ("MEDICATION//CefTRIAXone//Administered", "RxNorm/2193"),
    ("MEDICATION//Insulin Glargine  (CVICU Protocol)//Administered", "RxNorm/274783"),
    ("MEDICATION//NORepinephrine//Confirmed", "RxNorm/7512"),
    ("LAB//50813//mmol/L", "LOINC/2524-7//mmol/L"),
])
def test_a_mimic_spelling_becomes_the_consortium_code(mimic, consortium):
    assert standard_code(mimic) == consortium


@pytest.mark.parametrize("kept", [
    "HOSPITAL_ADMISSION//OBSERVATION ADMIT//EMERGENCY ROOM",  # no observation status at sites
    "HOSPITAL_ADMISSION//EW EMER.//WALK-IN/SELF REFERRAL",  # a location sites do not write
    "ICU_ADMISSION//Neuro Stepdown",  # not an ICU
    "MEDICATION//START//Heparin",  # an order, not a dose given
    "MEDICATION//Heparin//Not Given",
    "MEDICATION//Heparin Flush (10 units/ml)//Flushed",
    "MEDICATION//Heparin Flush (10 units/ml)//Administered",  # a line flush, not the drug
    "MEDICATION//Insulin//Administered",  # regular insulin is not glargine
    "MEDICATION//Lisinoprilx//Administered",  # a name must match as a whole word
    "LAB//50963//pg/mL",  # NT-proBNP: another analyte than BNP
    "HOSPITAL_ADMISSION//EMERGENCY//EMERGENCY_ROOM",  # already the consortium's code
])
def test_what_has_no_counterpart_is_not_rewritten(kept):
    assert standard_code(kept) is None


def test_the_spelling_step_comes_before_parent_codes_and_after_the_site_map():
    parents = {"LAB//50813//mmol/L": ["LOINC/32693-4"]}
    assert CodeMapping(parents=parents).map_code("LAB//50813//mmol/L").code == \
        "LOINC/2524-7//mmol/L"
    site = CodeMapping(site_map={"ICU_ADMISSION//Coronary Care Unit (CCU)": "ICU_ADMISSION//X"})
    assert site.map_code("ICU_ADMISSION//Coronary Care Unit (CCU)").code == "ICU_ADMISSION//X"


def test_the_tables_version_is_part_of_the_mapping_hash():
    assert CodeMapping().to_dict()["spellings"].startswith("mimic-iv-spellings/")
