"""Concept phrases resolve to codes by description, synonym, parent code or code; ambiguity
and unknown words are reported with the candidates."""

from __future__ import annotations

import polars as pl
import pytest

from fedehr.shared.clinical.concepts import AmbiguousConcept, CodeIndex, UnknownConcept

CODES = pl.DataFrame({
    "code": ["MEDS_DEATH", "HOSPITAL_ADMISSION//EMERGENCY", "HOSPITAL_ADMISSION//ELECTIVE",
             "HOSPITAL_DISCHARGE//HOME", "ICU_ADMISSION//MICU", "DIAGNOSIS//ICD//10//I509",
             "DIAGNOSIS//ICD//10//I5022", "DIAGNOSIS//ICD//10//N179", "DIAGNOSIS//ICD//10//J189",
             "DIAGNOSIS//ICD//10//J13", "LAB//2160-0//mg/dL", "LAB//50912//mg/dL"],
    "description": ["Death", "Hospital admission, emergency", "Hospital admission, elective",
                    "Hospital discharge, disposition home", "ICU admission to the MICU",
                    "Heart failure, unspecified", "Chronic systolic (congestive) heart failure",
                    "Acute kidney failure, unspecified", "Pneumonia, unspecified organism",
                    "Pneumonia due to Streptococcus pneumoniae",
                    "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine"],
    "parent_codes": [None, None, None, None, None, ["ICD10CM/I50.9"], ["ICD10CM/I50.22"],
                     ["ICD10CM/N17.9"], ["ICD10CM/J18.9"], ["ICD10CM/J13"], ["LOINC/2160-0"],
                     ["LOINC/2160-0"]],
}, schema_overrides={"parent_codes": pl.List(pl.String)})


@pytest.fixture
def index() -> CodeIndex:
    return CodeIndex.for_dataset(CODES)


def test_words_of_the_description_find_the_concept(index):
    assert index.resolve("death").codes == ("MEDS_DEATH",)
    assert set(index.resolve("ICU admission").codes) == {"ICU_ADMISSION//MICU"}
    # two source codes of one LOINC test are one concept
    assert set(index.resolve("creatinine").codes) == {"LAB//2160-0//mg/dL", "LAB//50912//mg/dL"}


def test_a_concept_includes_the_specific_codes_under_it(index):
    assert set(index.resolve("heart failure").codes) == {"DIAGNOSIS//ICD//10//I509",
                                                        "DIAGNOSIS//ICD//10//I5022"}
    # descriptions that start with the phrase name the concept, across ICD categories
    assert set(index.resolve("pneumonia").codes) == {"DIAGNOSIS//ICD//10//J189",
                                                    "DIAGNOSIS//ICD//10//J13"}


def test_clinical_synonyms_expand(index):
    assert index.resolve("mortality").codes == ("MEDS_DEATH",)
    readmission = index.resolve("readmission").codes
    assert set(readmission) == {"HOSPITAL_ADMISSION//EMERGENCY", "HOSPITAL_ADMISSION//ELECTIVE"}
    assert "ICU_ADMISSION//MICU" not in index.resolve("admission").codes
    assert index.resolve("AKI").codes == ("DIAGNOSIS//ICD//10//N179",)


def test_parent_codes_and_explicit_codes_resolve(index):
    assert set(index.resolve("ICD10CM/I50").codes) == {"DIAGNOSIS//ICD//10//I509",
                                                      "DIAGNOSIS//ICD//10//I5022"}
    assert index.resolve("code:LAB//2160").codes == ("LAB//2160-0//mg/dL",)
    assert index.resolve("MEDS_DEATH").codes == ("MEDS_DEATH",)


def test_alternatives_join_with_or(index):
    codes = index.resolve("death or ICU admission").codes
    assert codes == ("MEDS_DEATH", "ICU_ADMISSION//MICU")


def test_ambiguous_phrase_lists_the_concepts(index):
    with pytest.raises(AmbiguousConcept) as err:
        index.resolve("failure")  # heart failure or kidney failure?
    text = str(err.value)
    assert "ICD10CM/I50" in text and "ICD10CM/N17" in text and "or" in err.value.fix


def test_unknown_phrase_suggests_close_words(index):
    with pytest.raises(UnknownConcept) as err:
        index.resolve("hart failure")
    assert "heart" in err.value.fix


def test_descriptions_name_codes_and_vocabulary_tokens(index):
    assert index.describe("LAB//2160-0//mg/dL").startswith("Creatinine")
    assert index.describe("ICD10CM/I50.9") == "Heart failure, unspecified"  # via the child
    assert index.describe("LOINC/2160-0//mg/dL").startswith("Creatinine")
    assert index.describe("RxNorm/4603").startswith("furosemide")  # the synthetic catalogue
    assert index.describe("AGE//65-69") == "age 65-69"
    assert index.describe("NO_SUCH_CODE") == "NO_SUCH_CODE"


def test_an_outcome_resolves_to_the_codes_that_mean_it_not_to_qualifiers():
    # as on the MIMIC-IV demo: two brain-injury diagnoses mention death in a qualifier
    table = pl.concat([CODES, pl.DataFrame({
        "code": ["DIAGNOSIS//ICD//10//S060X7A", "DIAGNOSIS//ICD//10//S062X7A"],
        "description": [
            "Concussion with loss of consciousness of any duration with death due to brain "
            "injury prior to regaining consciousness, initial encounter",
            "Diffuse traumatic brain injury with loss of consciousness of any duration with "
            "death due to brain injury prior to regaining consciousness, initial encounter"],
        "parent_codes": [["ICD10CM/S06.0X7A"], ["ICD10CM/S06.2X7A"]],
    }, schema_overrides={"parent_codes": pl.List(pl.String)})])
    from fedehr.shared.clinical.prompt import parse_prompt, resolve_prompt

    resolved = resolve_prompt(parse_prompt("death within 30 days after discharge"),
                              CodeIndex.for_dataset(table))
    assert resolved.outcome.codes == ("MEDS_DEATH",)
    assert resolved.index.codes == ("HOSPITAL_DISCHARGE//HOME",)
    # the diagnosis itself is still found by what it is about
    assert CodeIndex.for_dataset(table).resolve("concussion").codes == (
        "DIAGNOSIS//ICD//10//S060X7A",)


def test_a_folded_icd_token_is_described_by_its_subcodes_words():
    table = pl.DataFrame({
        "code": ["DIAGNOSIS//ICD//9//E8497", "DIAGNOSIS//ICD//9//E8490"],
        "description": ["Accidents occurring in residential institution",
                        "Accidents occurring in home"],
        "parent_codes": [["ICD9CM/E849.7"], ["ICD9CM/E849.0"]],
    }, schema_overrides={"parent_codes": pl.List(pl.String)})
    assert CodeIndex.for_dataset(table).describe("ICD9CM/E849") == \
        "Accidents occurring in (any of 2)"


def test_an_ambiguous_phrase_offers_its_families_and_a_choice_resolves_it(index):
    with pytest.raises(AmbiguousConcept) as err:
        index.resolve("failure")
    assert err.value.phrase == "failure" and {"ICD10CM/I50", "ICD10CM/N17"} <= set(
        err.value.choices)
    heart = err.value.choices["ICD10CM/I50"]
    picked = index.with_choices({"Failure": heart})
    assert picked.resolve("failure").codes == heart
    assert set(heart) == {"DIAGNOSIS//ICD//10//I509", "DIAGNOSIS//ICD//10//I5022"}
    with pytest.raises(AmbiguousConcept):
        index.resolve("failure")  # the original index is unchanged
