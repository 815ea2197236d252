"""Per-dataset ACES predicate files (package data): the codes that stand for hospital
admission, discharge, death and ICU admission in the synthetic hospitals, in MIMIC-IV
(MEDS ETLs) and in the public anchor (the MIMIC-IV demo in MEDS form)."""
