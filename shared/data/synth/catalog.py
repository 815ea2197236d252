"""The clinical vocabulary of the synthetic hospitals: real ICD-10-CM, LOINC and RxNorm codes.

Every concept the generative model knows (conditions, lab tests, drugs) is
listed here once, with the real standard code and its official wording, so
the rest of the package refers to concepts by key (``"ckd"``, ``"creatinine"``)
and never repeats a code string. Sources: ICD-10-CM (CMS, FY2024 tables),
LOINC 2.7x long common names, RxNorm ingredient-level RxCUIs.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- conditions ---------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A clinical condition, the words a clinician writes for it, and its ICD-10-CM codes.

    `unspecified` is the catch-all code; `specific` are the codes a careful
    coder picks instead (each a (dotted code, description) pair).
    """

    key: str
    term: str  # the phrase a discharge summary uses
    unspecified: tuple[str, str]
    specific: tuple[tuple[str, str], ...] = ()
    kind: str = "chronic"  # chronic | acute | secondary (read off the labs)

    def all_codes(self) -> tuple[tuple[str, str], ...]:
        return (self.unspecified, *self.specific)


CONDITIONS: tuple[Condition, ...] = (
    Condition("htn", "hypertension", ("I10", "Essential (primary) hypertension")),
    Condition(
        "dm", "type 2 diabetes",
        ("E11.9", "Type 2 diabetes mellitus without complications"),
        (("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
         ("E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease")),
    ),
    Condition("hld", "hyperlipidemia", ("E78.5", "Hyperlipidemia, unspecified")),
    Condition(
        "ckd", "chronic kidney disease",
        ("N18.9", "Chronic kidney disease, unspecified"),
        (("N18.30", "Chronic kidney disease, stage 3 unspecified"),
         ("N18.4", "Chronic kidney disease, stage 4 (severe)")),
    ),
    Condition(
        "hf", "heart failure",
        ("I50.9", "Heart failure, unspecified"),
        (("I50.22", "Chronic systolic (congestive) heart failure"),
         ("I50.32", "Chronic diastolic (congestive) heart failure")),
    ),
    Condition(
        "copd", "COPD",
        ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
        (("J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation"),),
    ),
    Condition(
        "sepsis", "sepsis",
        ("A41.9", "Sepsis, unspecified organism"),
        (("A41.51", "Sepsis due to Escherichia coli [E. coli]"),
         ("A41.01", "Sepsis due to Methicillin susceptible Staphylococcus aureus")),
        kind="acute",
    ),
    Condition(
        "pneumonia", "pneumonia",
        ("J18.9", "Pneumonia, unspecified organism"),
        (("J15.9", "Unspecified bacterial pneumonia"),
         ("J13", "Pneumonia due to Streptococcus pneumoniae")),
        kind="acute",
    ),
    Condition(
        "aki", "acute kidney injury",
        ("N17.9", "Acute kidney failure, unspecified"),
        (("N17.0", "Acute kidney failure with tubular necrosis"),),
        kind="acute",
    ),
    Condition(
        "effusion", "pleural effusion",
        ("J90", "Pleural effusion, not elsewhere classified"),
        (("J91.8", "Pleural effusion in other conditions classified elsewhere"),),
        kind="acute",
    ),
    Condition("hyponatremia", "hyponatremia", ("E87.1", "Hypo-osmolality and hyponatremia"),
              kind="secondary"),
    Condition("hyperkalemia", "hyperkalemia", ("E87.5", "Hyperkalemia"), kind="secondary"),
    Condition("anemia", "anemia", ("D64.9", "Anemia, unspecified"), kind="secondary"),
)
CONDITION = {c.key: c for c in CONDITIONS}
CHRONIC = tuple(c.key for c in CONDITIONS if c.kind == "chronic")
ACUTE = tuple(c.key for c in CONDITIONS if c.kind == "acute")
SECONDARY = tuple(c.key for c in CONDITIONS if c.kind == "secondary")


def icd_event_code(dotted: str) -> str:
    """``E11.9`` -> ``DIAGNOSIS//ICD//10//E119`` (MIMIC style: the code without its dot)."""
    return f"DIAGNOSIS//ICD//10//{dotted.replace('.', '')}"


def icd_parent(dotted: str) -> str:
    return f"ICD10CM/{dotted}"


# -- laboratory tests ---------------------------------------------------------


@dataclass(frozen=True)
class LabTest:
    """A lab test in standard (LOINC, US units) and local (site-specific code, SI units) form.

    ``local value = standard value * to_local``; values are rounded to
    `decimals` / `local_decimals` as a laboratory reports them.
    """

    key: str
    name: str  # the word a note uses
    loinc: str
    loinc_name: str
    unit: str
    decimals: int
    local_code: str
    local_name: str
    local_unit: str
    to_local: float
    local_decimals: int

    def standard_code(self) -> str:
        return f"LAB//{self.loinc}//{self.unit}"

    def local_event_code(self) -> str:
        return f"LAB//{self.local_code}//{self.local_unit}"


LABS: tuple[LabTest, ...] = (
    LabTest("creatinine", "Creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
            "mg/dL", 2, "CREAT_S", "Creatinine, serum (enzymatic)", "umol/L", 88.42, 0),
    LabTest("bun", "BUN", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma",
            "mg/dL", 0, "UREA_S", "Urea, serum", "mmol/L", 0.357, 1),
    LabTest("glucose", "Glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma",
            "mg/dL", 0, "GLU_S", "Glucose, serum (random)", "mmol/L", 1 / 18.016, 1),
    LabTest("lactate", "Lactate", "2524-7", "Lactate [Moles/volume] in Serum or Plasma",
            "mmol/L", 1, "LACT_P", "Lactate, plasma (blood gas analyser)", "mmol/L", 1.0, 1),
    LabTest("wbc", "WBC", "6690-2", "Leukocytes [#/volume] in Blood by Automated count",
            "10*3/uL", 1, "WCC_B", "White cell count, whole blood", "10*9/L", 1.0, 1),
    LabTest("hemoglobin", "Hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood",
            "g/dL", 1, "HB_B", "Haemoglobin, whole blood", "g/L", 10.0, 0),
    LabTest("sodium", "Sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma",
            "mmol/L", 0, "NA_S", "Sodium, serum", "mmol/L", 1.0, 0),
    LabTest("potassium", "Potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma",
            "mmol/L", 1, "K_S", "Potassium, serum", "mmol/L", 1.0, 1),
    LabTest("bnp", "BNP", "30934-4", "Natriuretic peptide B [Mass/volume] in Serum or Plasma",
            "pg/mL", 0, "BNP_P", "B-type natriuretic peptide, plasma", "ng/L", 1.0, 0),
)
LAB = {lab.key: lab for lab in LABS}
LAB_INDEX = {lab.key: i for i, lab in enumerate(LABS)}

# -- medications --------------------------------------------------------------


@dataclass(frozen=True)
class Drug:
    name: str  # generic name, as in the event code
    rxcui: str  # RxNorm ingredient concept
    drug_class: str

    def event_code(self) -> str:
        return f"MEDICATION//{self.name}"


DRUGS: tuple[Drug, ...] = (
    Drug("metformin", "6809", "biguanide antidiabetic"),
    Drug("insulin glargine", "274783", "long-acting insulin"),
    Drug("lisinopril", "29046", "ACE inhibitor"),
    Drug("amlodipine", "17767", "calcium channel blocker"),
    Drug("atorvastatin", "83367", "HMG-CoA reductase inhibitor"),
    Drug("furosemide", "4603", "loop diuretic"),
    Drug("carvedilol", "20352", "beta blocker"),
    Drug("tiotropium", "69120", "long-acting inhaled anticholinergic"),
    Drug("albuterol", "435", "short-acting inhaled beta agonist"),
    Drug("prednisone", "8640", "systemic corticosteroid"),
    Drug("vancomycin", "11124", "glycopeptide antibiotic"),
    Drug("ceftriaxone", "2193", "third-generation cephalosporin"),
    Drug("azithromycin", "18631", "macrolide antibiotic"),
    Drug("norepinephrine", "7512", "vasopressor"),
    Drug("heparin", "5224", "anticoagulant"),
    Drug("acetaminophen", "161", "analgesic and antipyretic"),
)
DRUG = {d.name: d for d in DRUGS}

# -- patient-reported outcomes and imaging --------------------------------------

PROS: dict[str, str] = {
    "PRO//PROMIS//PHYSICAL_FUNCTION":
        "PROMIS Physical Function T-score (higher is better function)",
    "PRO//PROMIS//FATIGUE": "PROMIS Fatigue T-score (higher is more fatigue)",
    "PRO//PROMIS//DEPRESSION": "PROMIS Depression T-score (higher is more depressive symptoms)",
}
IMAGING: dict[str, str] = {
    "IMAGE//CHEST_XRAY":
        "Chest radiograph; text_value is the study id in images/embeddings.parquet",
    "IMAGE//CT_CHEST": "CT of the chest; text_value is the study id in images/embeddings.parquet",
}
IMAGE_FINDINGS = ("pneumonia", "hf", "effusion")  # what an image can show
EMBEDDING_DIM = 32
