"""Patient-reported outcomes: PROMIS T-scores at the follow-up visit after a discharge.

A survivor is seen 7-21 days after discharge (if not back in hospital by
then) and answers with probability 0.7. With a disease burden

    b = 0.3 htn + 0.6 dm + 0.8 ckd + 1.2 hf + 1.1 copd
        + 0.5 long stay + 0.4 ICU + 0.6 (sepsis or pneumonia)

the T-scores (population mean 50, sd 10; clipped to 20..80) are

    physical function = 53 - 4.0 b - 2.5 (age - 65)/10 + Normal(0, 6^2)   (higher is better)
    fatigue           = 47 + 3.5 b + Normal(0, 7^2)                       (higher is worse)
    depression        = 47 + 2.5 b + 1.5 female + Normal(0, 7^2)         (higher is worse)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedehr.shared.data.synth.catalog import PROS
from fedehr.shared.data.synth.patients import DAY_US, Cohort

PRO_CODES = tuple(PROS)  # physical function, fatigue, depression
RESPONSE_RATE = 0.7


@dataclass
class Responses:
    stay: np.ndarray
    code: np.ndarray  # index into PRO_CODES
    time: np.ndarray
    value: np.ndarray


def burden(c: Cohort) -> np.ndarray:
    h = {k: c.has(k).astype(np.float64) for k in ("htn", "dm", "ckd", "hf", "copd")}
    return (0.3 * h["htn"] + 0.6 * h["dm"] + 0.8 * h["ckd"] + 1.2 * h["hf"] + 1.1 * h["copd"]
            + 0.5 * c.long_stay + 0.4 * c.icu
            + 0.6 * (c.has("sepsis") | c.has("pneumonia")))


def follow_up(rng: np.random.Generator, c: Cohort) -> Responses:
    m = c.n_stays
    same_patient_next = np.append(c.patient[1:] == c.patient[:-1], False)
    next_admit = np.where(same_patient_next, np.append(c.admit[1:], 0), np.iinfo(np.int64).max)
    visit = c.discharge + (rng.uniform(7.0, 21.0, m) * DAY_US).astype(np.int64)
    seen = np.flatnonzero(~c.died & (visit < next_admit) & (rng.random(m) < RESPONSE_RATE))
    b = burden(c)[seen]
    age10 = (c.age[seen] - 65.0) / 10.0
    female = c.female[c.patient[seen]]
    n = len(seen)
    scores = np.stack([
        53.0 - 4.0 * b - 2.5 * age10 + rng.normal(0, 6, n),
        47.0 + 3.5 * b + rng.normal(0, 7, n),
        47.0 + 2.5 * b + 1.5 * female + rng.normal(0, 7, n),
    ], axis=1)
    scores = np.round(np.clip(scores, 20.0, 80.0), 1)
    k = len(PRO_CODES)
    return Responses(stay=np.repeat(seen, k), code=np.tile(np.arange(k), n),
                     time=np.repeat(visit[seen], k), value=scores.reshape(-1))
