"""Turns one hospital's simulated cohort into MEDS event rows and code metadata.

The cohort (`patients.simulate`) is the clinical truth; this module writes
it down the way the site does: its diagnosis coding habit, its lab codes and
units, its notes, imaging and follow-up questionnaires. Times: static rows
(sex) have a null time, diagnoses and the discharge summary are stamped at
discharge (as in MIMIC, where diagnoses are known only when the stay is coded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from fedehr.shared.data import schema as S
from fedehr.shared.data.synth import notes
from fedehr.shared.data.synth.catalog import DRUGS, IMAGING, PROS, icd_event_code
from fedehr.shared.data.synth.coding import (
    CodingHabit,
    code_diagnoses,
    diagnosis_vocabulary,
    lab_coding,
)
from fedehr.shared.data.synth.imaging import MODALITIES, image_studies
from fedehr.shared.data.synth.patients import (
    ADMISSION_TYPES,
    DISPOSITIONS,
    ICU_UNITS,
    LOCATIONS,
    Cohort,
)
from fedehr.shared.data.synth.pros import PRO_CODES, follow_up
from fedehr.shared.data.synth.treatment import administer, drugs_by_stay

NOTE_CODE = "NOTE//DISCHARGE_SUMMARY"
MINUTE_US = 60_000_000  # event times are recorded to the minute, as in an EHR


@dataclass
class SiteRecords:
    frames: list[pl.DataFrame]
    codes: dict[str, tuple[str, list[str] | None]]  # code -> (description, parents)
    images: pa.Table

    @property
    def n_events(self) -> int:
        return sum(f.height for f in self.frames)


def _frame(subject: np.ndarray, time: np.ndarray | None, code, numeric=None,
           text=None) -> pl.DataFrame:
    n = len(subject)
    codes = [code] * n if isinstance(code, str) else list(code)
    cols = {
        S.SUBJECT_ID: pl.Series(subject, dtype=pl.Int64),
        S.TIME: (pl.Series(np.asarray(time) // MINUTE_US * MINUTE_US, dtype=pl.Int64)
                 .cast(pl.Datetime("us")) if time is not None
                 else pl.Series([None] * n, dtype=pl.Datetime("us"))),
        S.CODE: pl.Series(codes, dtype=pl.String),
        S.NUMERIC_VALUE: (pl.Series(np.asarray(numeric, np.float32), dtype=pl.Float32)
                          if numeric is not None else pl.Series([None] * n, dtype=pl.Float32)),
        S.TEXT_VALUE: pl.Series(list(text) if text is not None else [None] * n, dtype=pl.String),
    }
    return pl.DataFrame(cols)


def _pick(options: tuple[str, ...], index: np.ndarray) -> list[str]:
    return np.array(options, dtype=object)[index].tolist()


def vocabulary(local_codes: bool) -> dict[str, tuple[str, list[str] | None]]:
    """Description and parents of every code a site can emit."""
    voc: dict[str, tuple[str, list[str] | None]] = {
        "GENDER//F": ("Administrative sex: female", None),
        "GENDER//M": ("Administrative sex: male", None),
        S.BIRTH_CODE: ("Birth", None),
        S.DEATH_CODE: ("Death", None),
        NOTE_CODE: ("Discharge summary (free text in text_value)", None),
    }
    for t in ADMISSION_TYPES:
        for loc in LOCATIONS:
            voc[f"HOSPITAL_ADMISSION//{t}//{loc}"] = (
                f"Hospital admission, {t.lower()}, from {loc.lower().replace('_', ' ')}", None)
    for d in DISPOSITIONS:
        voc[f"HOSPITAL_DISCHARGE//{d}"] = (
            f"Hospital discharge, disposition {d.lower().replace('_', ' ')}", None)
    for u in ICU_UNITS:
        voc[f"ICU_ADMISSION//{u}"] = (f"ICU admission to the {u}", None)
        voc[f"ICU_DISCHARGE//{u}"] = (f"ICU discharge from the {u}", None)
    for code, desc, parents in zip(*diagnosis_vocabulary(), strict=True):
        voc[code] = (desc, parents)
    labs = lab_coding(local_codes)
    for code, desc, parents in zip(labs.codes, labs.descriptions, labs.parents, strict=True):
        voc[code] = (desc, parents)
    for drug in DRUGS:
        voc[drug.event_code()] = (f"{drug.name} ({drug.drug_class})", [f"RxNorm/{drug.rxcui}"])
    voc.update({code: (desc, None) for code, desc in PROS.items()})
    voc.update({code: (desc, None) for code, desc in IMAGING.items()})
    return voc


def build_records(rng: np.random.Generator, cohort: Cohort, *, site: str,
                  subject_ids: np.ndarray, habit: CodingHabit, local_codes: bool) -> SiteRecords:
    c = cohort
    sid = subject_ids[c.patient]  # per stay
    frames = [
        _frame(subject_ids, None, _pick(("GENDER//M", "GENDER//F"), c.female.astype(int))),
        _frame(subject_ids, c.birth, S.BIRTH_CODE),
        _frame(sid, c.admit, [f"HOSPITAL_ADMISSION//{ADMISSION_TYPES[t]}//{LOCATIONS[loc]}"
                              for t, loc in zip(c.admission_type, c.location, strict=True)]),
        _frame(sid, c.discharge, [f"HOSPITAL_DISCHARGE//{d}"
                                  for d in _pick(DISPOSITIONS, c.disposition)]),
        _frame(sid[c.died], c.discharge[c.died], S.DEATH_CODE),
    ]
    icu = np.flatnonzero(c.icu)
    units = _pick(ICU_UNITS, c.icu_unit[icu])
    frames += [_frame(sid[icu], c.icu_in[icu], [f"ICU_ADMISSION//{u}" for u in units]),
               _frame(sid[icu], c.icu_out[icu], [f"ICU_DISCHARGE//{u}" for u in units])]

    dx_stay, dx_code = code_diagnoses(rng, c, habit)
    frames.append(_frame(sid[dx_stay], c.discharge[dx_stay],
                         [icd_event_code(x) for x in dx_code]))

    labs = lab_coding(local_codes)
    reported = labs.report(c.labs.lab, c.labs.value)
    frames.append(_frame(sid[c.labs.stay], c.labs.time, _pick(labs.codes, c.labs.lab),
                         numeric=reported))

    admin = administer(rng, c)
    frames.append(_frame(sid[admin.stay], admin.time,
                         _pick(tuple(d.event_code() for d in DRUGS), admin.drug)))

    texts = notes.discharge_summaries(c, reported, labs, drugs_by_stay(admin, c.n_stays))
    frames.append(_frame(sid, c.discharge, NOTE_CODE, text=texts))

    pro = follow_up(rng, c)
    frames.append(_frame(sid[pro.stay], pro.time, _pick(PRO_CODES, pro.code), numeric=pro.value))

    studies = image_studies(rng, c, site)
    frames.append(_frame(sid[studies.stay], studies.time, _pick(MODALITIES, studies.modality),
                         text=studies.study_id.tolist()))

    voc = vocabulary(local_codes)
    used = sorted(set().union(*(f[S.CODE].unique().to_list() for f in frames)))
    return SiteRecords(frames=frames, codes={code: voc[code] for code in used},
                       images=studies.sidecar())
