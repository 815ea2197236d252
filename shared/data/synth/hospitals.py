"""The synthetic hospitals: site profiles and `synthesize`, which writes one MEDS dataset each.

Site k of N (0-based, named hospital_a, hospital_b, ...) gets a share
(N - k) / (N + ... + 1) of the patients (3:2:1 for three sites) and an
archetype in turn: a tertiary teaching hospital (younger, sicker referrals,
thorough coding), a community hospital (older chronic patients, many
unspecified codes) and a regional hospital (standard coding). The smallest
site (the last; hospital_c of three) reports labs under local codes and SI
units; its true local -> LOINC map is written beside the dataset as
``<out>/<site>.harmonisation.yaml``. Everything is drawn from
``numpy.random.default_rng([seed, k])``, so a site's bytes depend only on
the seed, its index and its patient count (dataset.json's created_at aside).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rich.progress import Progress

from fedehr.shared.atomic import write_text
from fedehr.shared.data.synth.coding import HABITS, harmonisation_map
from fedehr.shared.data.synth.patients import CaseMix, Cohort, simulate
from fedehr.shared.data.synth.records import build_records
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import ConfigError, DataError

SUBJECT_ID_STRIDE = 10_000_000  # site k's subject ids are (k + 1) * stride + i
MAX_SITES = len(string.ascii_lowercase)

ARCHETYPES: dict[str, tuple[CaseMix, str]] = {
    "tertiary": (CaseMix(age_mean=58.0, age_sd=17.0, chronic_shift={"ckd": 0.2, "copd": -0.2},
                         acute_shift=0.6, severity_shift=0.5, elective_share=0.3), "thorough"),
    "community": (CaseMix(age_mean=71.0, age_sd=12.0,
                          chronic_shift={"htn": 0.4, "dm": 0.3, "ckd": 0.2, "hf": 0.4,
                                         "copd": 0.4},
                          acute_shift=0.0, severity_shift=-0.1, elective_share=0.2),
                  "unspecified"),
    "regional": (CaseMix(age_mean=64.0, age_sd=15.0, chronic_shift={"dm": 0.2},
                         acute_shift=-0.1, severity_shift=0.0, elective_share=0.25), "standard"),
}


@dataclass(frozen=True)
class SiteProfile:
    index: int
    name: str
    size_share: float
    archetype: str  # key of ARCHETYPES: the case mix
    coding_habit: str  # key of coding.HABITS
    local_codes: bool

    @property
    def case_mix(self) -> CaseMix:
        return ARCHETYPES[self.archetype][0]


@dataclass(frozen=True)
class SiteSummary:
    """What `synthesize` wrote for one hospital. Rates are per hospital stay;
    readmission is among stays the patient survived."""

    name: str
    path: Path
    subjects: int
    events: int
    stays: int
    death_rate: float
    readmission_30d_rate: float
    long_stay_rate: float
    icu_transfer_rate: float
    size_share: float
    case_mix: str
    coding_habit: str
    local_codes: bool
    harmonisation: Path | None  # the local -> LOINC map, for a local-codes site


def site_name(index: int) -> str:
    return f"hospital_{string.ascii_lowercase[index]}"


def site_profiles(sites: int) -> list[SiteProfile]:
    """Profiles of `sites` hospitals: sizes N : N-1 : ... : 1, archetypes in turn."""
    if not 1 <= sites <= MAX_SITES:
        raise ConfigError(f"sites must be between 1 and {MAX_SITES}, got {sites}",
                          where="synthesize", fix="choose a smaller number of hospitals")
    total = sites * (sites + 1) / 2
    names = list(ARCHETYPES)
    return [
        SiteProfile(index=k, name=site_name(k), size_share=(sites - k) / total,
                    archetype=names[k % len(names)],
                    coding_habit=ARCHETYPES[names[k % len(names)]][1],
                    local_codes=sites >= 2 and k == sites - 1)
        for k in range(sites)
    ]


def allocate(patients: int, shares: list[float]) -> list[int]:
    """Split `patients` by `shares` (largest remainder), at least one patient per site."""
    raw = np.array(shares) * patients
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: patients - counts.sum()]:
        counts[k] += 1
    for k in range(len(counts)):  # take from the largest to give every site a patient
        if counts[k] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[k] = 1
    return counts.tolist()


def _rates(c: Cohort) -> dict[str, float]:
    alive = ~c.died
    return {
        "death_rate": float(c.died.mean()),
        "readmission_30d_rate": float(c.readmit30[alive].mean()) if alive.any() else 0.0,
        "long_stay_rate": float(c.long_stay.mean()),
        "icu_transfer_rate": float(c.icu.mean()),
    }


def synthesize(out: Path, *, sites: int = 3, patients: int = 2000, seed: int = 0,
               overwrite: bool = False, progress: Progress | None = None) -> list[SiteSummary]:
    """Write `sites` synthetic hospitals with `patients` patients in all under `out/<site>`.

    Returns one `SiteSummary` per hospital, largest first.
    """
    out = Path(out)
    profiles = site_profiles(sites)
    if patients < sites:
        raise ConfigError(f"need at least one patient per hospital ({patients} for {sites})",
                          where="synthesize", fix=f"ask for at least {sites} patients")
    counts = allocate(patients, [p.size_share for p in profiles])
    if max(counts) >= SUBJECT_ID_STRIDE:
        raise ConfigError(f"at most {SUBJECT_ID_STRIDE - 1} patients per hospital",
                          where="synthesize", fix="ask for fewer patients")
    targets = [out / p.name for p in profiles]
    targets += [out / f"{p.name}.harmonisation.yaml" for p in profiles if p.local_codes]
    if not overwrite:
        for path in targets:
            if path.exists():
                raise DataError("destination already exists", where=str(path),
                                fix="choose a new output folder or pass --overwrite")

    task = progress.add_task("synthetic hospitals", total=sites) if progress else None
    summaries = []
    for profile, n in zip(profiles, counts, strict=True):
        if progress is not None:
            progress.update(task, description=f"synthesizing {profile.name} ({n} patients)")
        summaries.append(_write_site(out, profile, n, seed, overwrite))
        if progress is not None:
            progress.advance(task)
    return summaries


def _write_site(out: Path, profile: SiteProfile, n: int, seed: int,
                overwrite: bool) -> SiteSummary:
    rng = np.random.default_rng([seed, profile.index])
    cohort = simulate(rng, n, profile.case_mix)
    subject_ids = (profile.index + 1) * SUBJECT_ID_STRIDE + np.arange(n, dtype=np.int64)
    records = build_records(rng, cohort, site=profile.name, subject_ids=subject_ids,
                            habit=HABITS[profile.coding_habit], local_codes=profile.local_codes)
    dest = out / profile.name
    meta = {"synthetic": {"generator": "fedehr.shared.data.synth", "seed": seed,
                          "site_index": profile.index, "case_mix": profile.archetype,
                          "coding_habit": profile.coding_habit,
                          "local_codes": profile.local_codes}}
    with MEDSWriter(dest, dataset_name=profile.name, etl_name="fedehr-synth", seed=seed,
                    overwrite=overwrite, extra_metadata=meta) as writer:
        for frame in records.frames:
            writer.add_events(frame)
        codes = list(records.codes)
        writer.add_codes(codes, [records.codes[c][0] for c in codes],
                         [records.codes[c][1] for c in codes])
        writer.add_sidecar("images/embeddings.parquet", records.images)
        events = writer.rows_written
    harmonisation = None
    if profile.local_codes:
        harmonisation = out / f"{profile.name}.harmonisation.yaml"
        write_text(harmonisation, yaml.safe_dump(harmonisation_map(profile.name),
                                                 sort_keys=True, width=100), mode=0o644)
    return SiteSummary(
        name=profile.name, path=dest, subjects=n, events=events, stays=cohort.n_stays,
        **_rates(cohort), size_share=profile.size_share, case_mix=profile.archetype,
        coding_habit=profile.coding_habit, local_codes=profile.local_codes,
        harmonisation=harmonisation,
    )
