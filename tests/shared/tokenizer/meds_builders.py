"""Builders of small MEDS datasets for the tokenizer tests (MEDSWriter in tmp_path)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.writer import MEDSWriter

T0 = datetime(2020, 1, 1, 8, 0)


def event_rows(n_patients: int, seed: int = 0, creat_code: str = "LAB//2160-0//mg/dL",
               creat_scale: float = 1.0, dx_code: str = "DIAGNOSIS//ICD//10//I509",
               first_id: int = 1) -> pl.DataFrame:
    """Patients with sex, birth, an admission, a diagnosis, creatinine, a note, an image
    and PRO answers; creatinine values ~ lognormal around 1 mg/dL times `creat_scale`."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_patients):
        sid = first_id + k
        start = T0 + timedelta(days=int(rng.integers(0, 300)))
        rows.append((sid, None, "GENDER//F" if k % 2 else "GENDER//M", None, None))
        rows.append((sid, start - timedelta(days=365.25 * (40 + k % 50)), "MEDS_BIRTH", None,
                     None))
        rows.append((sid, start, "HOSPITAL_ADMISSION//EMERGENCY", None, None))
        rows.append((sid, start + timedelta(minutes=2), dx_code, None, None))
        for j in range(3):
            value = float(np.exp(rng.normal(0.0, 0.4))) * creat_scale
            rows.append((sid, start + timedelta(hours=6 * (j + 1)), creat_code, value, None))
        rows.append((sid, start + timedelta(days=2), "NOTE//DISCHARGE_SUMMARY", None,
                     f"note of patient {sid}"))
        rows.append((sid, start + timedelta(days=2, hours=1), "IMAGE//CHEST_XRAY", None,
                     f"study-{sid}"))
        rows.append((sid, start + timedelta(days=3), "HOSPITAL_DISCHARGE//HOME", None, None))
        rows.append((sid, start + timedelta(days=30), "PRO//PROMIS//FATIGUE",
                     float(rng.normal(50, 10)), None))
    return pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                      "code": pl.String, "numeric_value": pl.Float32,
                                      "text_value": pl.String}, orient="row")


def write_meds(dest, events: pl.DataFrame, parents: dict[str, list[str]] | None = None
               ) -> MEDSDataset:
    with MEDSWriter(dest, dataset_name="test", etl_name="tests") as writer:
        writer.add_events(events)
        if parents:
            writer.add_codes(list(parents), parents=list(parents.values()))
    return MEDSDataset.open(dest)


STANDARD_PARENTS = {
    "LAB//2160-0//mg/dL": ["LOINC/2160-0"],
    "DIAGNOSIS//ICD//10//I509": ["ICD10CM/I50.9"],
}
