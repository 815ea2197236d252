"""Chest imaging studies and their embeddings, a noisy function of the true findings.

Each stay gets a chest radiograph with probability
``sigmoid(-0.8 + 2.5 pneumonia + 1.5 heart failure + 1.2 effusion + 1.0 sepsis
+ 0.8 COPD + 0.5 ICU)`` and a chest CT with probability ``0.08 + 0.2 (pneumonia
or effusion)``. A study shows each true finding (pneumonia, heart failure
congestion, pleural effusion) with the modality's sensitivity (radiograph 0.85,
CT 0.95). Its embedding stands in for a frozen image encoder's output:

    e = 1.5 * visible_findings @ W + 0.5 * m_modality + Normal(0, 0.7^2 I),   e in R^32

where W (3 x 32) and the modality offsets m are fixed by a constant seed, the
same at every hospital (one shared "encoder"). The pleural effusion finding
is coded (J90) less reliably than it is imaged, so images add signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedehr.shared.data.synth.catalog import EMBEDDING_DIM, IMAGE_FINDINGS
from fedehr.shared.data.synth.patients import HOUR_US, Cohort, sigmoid

ENCODER_SEED = 20_240_601
MODALITIES = ("IMAGE//CHEST_XRAY", "IMAGE//CT_CHEST")
SHORT = {"IMAGE//CHEST_XRAY": "CXR", "IMAGE//CT_CHEST": "CT"}
SENSITIVITY = np.array([0.85, 0.95])
EMBEDDING_SCHEMA = pa.schema([
    pa.field("study_id", pa.string(), nullable=False),
    pa.field("embedding", pa.list_(pa.float32())),
])


@dataclass
class Studies:
    stay: np.ndarray
    modality: np.ndarray  # index into MODALITIES
    time: np.ndarray  # int64 us
    study_id: np.ndarray  # object (str)
    embedding: np.ndarray  # float32 (k, EMBEDDING_DIM)

    def sidecar(self) -> pa.Table:
        flat = pa.array(self.embedding.reshape(-1), type=pa.float32())
        offsets = pa.array(np.arange(0, len(flat) + 1, EMBEDDING_DIM, dtype=np.int32))
        lists = pa.ListArray.from_arrays(offsets, flat)
        return pa.table([pa.array(self.study_id.tolist(), type=pa.string()), lists],
                        schema=EMBEDDING_SCHEMA)


def encoder() -> tuple[np.ndarray, np.ndarray]:
    """The fixed finding directions W (findings x dim) and modality offsets (2 x dim)."""
    rng = np.random.default_rng(ENCODER_SEED)
    return (rng.normal(0, 1, (len(IMAGE_FINDINGS), EMBEDDING_DIM)),
            rng.normal(0, 1, (len(MODALITIES), EMBEDDING_DIM)))


def image_studies(rng: np.random.Generator, cohort: Cohort, site: str) -> Studies:
    m = cohort.n_stays
    h = {k: cohort.has(k).astype(np.float64) for k in ("pneumonia", "hf", "effusion", "sepsis",
                                                          "copd")}
    p_xr = sigmoid(-0.8 + 2.5 * h["pneumonia"] + 1.5 * h["hf"] + 1.2 * h["effusion"]
                   + 1.0 * h["sepsis"] + 0.8 * h["copd"] + 0.5 * cohort.icu)
    p_ct = 0.08 + 0.2 * np.maximum(h["pneumonia"], h["effusion"])
    xr = np.flatnonzero(rng.random(m) < p_xr)
    ct = np.flatnonzero(rng.random(m) < p_ct)
    stay = np.concatenate([xr, ct])
    modality = np.concatenate([np.zeros(len(xr), np.int64), np.ones(len(ct), np.int64)])
    order = np.lexsort((modality, stay))
    stay, modality = stay[order], modality[order]
    los = cohort.discharge[stay] - cohort.admit[stay]
    offset = np.where(modality == 0, rng.uniform(0.5, 6.0, len(stay)) * HOUR_US,
                      np.minimum(rng.uniform(6.0, 30.0, len(stay)) * HOUR_US, 0.6 * los))
    time = cohort.admit[stay] + offset.astype(np.int64)
    truth = np.stack([h[k][stay] for k in IMAGE_FINDINGS], axis=1)
    visible = truth * (rng.random(truth.shape) < SENSITIVITY[modality][:, None])
    w, mod = encoder()
    emb = (1.5 * visible @ w + 0.5 * mod[modality]
           + rng.normal(0, 0.7, (len(stay), EMBEDDING_DIM))).astype(np.float32)
    ids = np.array([f"{site}-{SHORT[MODALITIES[k]]}-{j:06d}"
                    for j, k in enumerate(modality)], dtype=object)
    return Studies(stay=stay, modality=modality, time=time, study_id=ids, embedding=emb)
