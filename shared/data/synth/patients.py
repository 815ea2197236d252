"""The generative clinical model: latent patients, hospital stays, lab trajectories, outcomes.

One hospital's cohort is simulated as numpy arrays, vectorised over patients
(admission rounds are the only Python loop). The model, in the order it is
drawn (coefficients are the module constants below; docs/synthetic-hospitals.md
writes them out as equations):

1. Patient: sex, age at first admission ~ Normal(site mean, site sd) clipped
   to 18..95, chronic conditions in dependency order (hypertension -> diabetes
   -> hyperlipidemia -> CKD -> heart failure; COPD), each a logistic in
   age/10 years plus its parents plus the site's case-mix shift.
2. Stay: a latent severity z ~ Normal(site shift, 1); acute conditions
   (pneumonia, sepsis, AKI, pleural effusion) logistic in the chronic ones,
   age and z; admission type and source.
3. Lab trajectories: per-stay parameters (creatinine baseline and acute
   rise, admission lactate and WBC, glucose level, BNP, sodium, haemoglobin)
   set by conditions and z; daily draws follow smooth curves plus noise.
4. Outcomes, each a logistic in a shared feature vector (age, comorbidities,
   acute conditions, the true lab peaks, z): ICU transfer, then in-hospital
   death and long stay (>7 days, both also depending on ICU), then discharge
   disposition and 30-day readmission for survivors. The coefficients are
   the same at every site, so a model trained at one site transfers; only
   the case mix differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedehr.shared.data.synth.catalog import LAB_INDEX, LABS

DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000
YEAR_DAYS = 365.25
FIRST_ADMIT_FROM = np.datetime64("2016-01-01T00:00:00", "us").astype(np.int64)
FIRST_ADMIT_TO = np.datetime64("2023-01-01T00:00:00", "us").astype(np.int64)
FOLLOW_UP_END = np.datetime64("2024-12-31T00:00:00", "us").astype(np.int64)
MAX_STAYS = 8
MAX_LAB_DAYS = 14

ADMISSION_TYPES = ("EMERGENCY", "URGENT", "ELECTIVE")
LOCATIONS = ("EMERGENCY_ROOM", "PHYSICIAN_REFERRAL", "TRANSFER_FROM_HOSPITAL", "CLINIC_REFERRAL")
DISPOSITIONS = ("HOME", "HOME_HEALTH", "SNF", "REHAB", "DIED")
ICU_UNITS = ("MICU", "SICU", "CCU")

# Chronic prevalence: logit = intercept + age_coef * (age - 65) / 10 + sum(parent coefs) + shift.
CHRONIC_MODEL: dict[str, tuple[float, float, dict[str, float]]] = {
    "htn": (-0.3, 0.6, {}),
    "dm": (-1.3, 0.25, {"htn": 0.5}),
    "hld": (-0.9, 0.3, {"dm": 0.5, "htn": 0.3}),
    "ckd": (-2.6, 0.5, {"dm": 0.9, "htn": 0.6}),
    "hf": (-2.8, 0.6, {"htn": 0.8, "ckd": 0.5}),
    "copd": (-2.3, 0.4, {}),
}

# Acute conditions per stay: logit = intercept + coefs . features + site acute shift.
ACUTE_MODEL: dict[str, tuple[float, dict[str, float]]] = {
    "pneumonia": (-2.2, {"copd": 1.0, "age10": 0.2, "z": 0.4}),
    "sepsis": (-3.0, {"pneumonia": 1.4, "dm": 0.3, "ckd": 0.4, "age10": 0.2, "z": 0.6}),
    "aki": (-2.8, {"ckd": 1.0, "sepsis": 1.3, "hf": 0.4, "z": 0.5}),
    "effusion": (-3.4, {"hf": 1.7, "pneumonia": 1.1}),
}

# Outcome models over the shared feature vector (see `outcome_features`).
OUTCOME_MODEL: dict[str, tuple[float, dict[str, float]]] = {
    "icu": (-3.1, {"sepsis": 1.2, "pneumonia": 0.5, "lactate": 0.5, "hf": 0.3,
                   "creatinine": 0.25, "z": 0.4, "age10": 0.1}),
    "death": (-5.6, {"age10": 0.5, "sepsis": 1.0, "pneumonia": 0.4, "hf": 0.35, "ckd": 0.3,
                     "copd": 0.25, "creatinine": 0.55, "lactate": 0.45, "wbc": 0.2,
                     "sodium": 0.25, "icu": 0.8, "z": 0.3}),
    "long_stay": (-2.0, {"age10": 0.2, "sepsis": 0.8, "pneumonia": 0.6, "aki": 0.7,
                         "creatinine": 0.3, "lactate": 0.2, "icu": 1.1, "copd": 0.3, "hf": 0.25,
                         "anemia": 0.3, "z": 0.3, "elective": -0.6}),
    "readmit": (-2.7, {"age10": 0.15, "hf": 0.5, "ckd": 0.35, "copd": 0.3, "dm": 0.2,
                       "creatinine": 0.3, "glucose": 0.25, "anemia": 0.3, "bnp": 0.3,
                       "sodium": 0.2, "prior_stays": 0.25, "long_stay": 0.3, "snf": 0.3}),
}


@dataclass(frozen=True)
class CaseMix:
    """Who a hospital admits: age distribution, comorbidity and acuity shifts (log-odds)."""

    age_mean: float = 64.0
    age_sd: float = 15.0
    chronic_shift: dict[str, float] = field(default_factory=dict)
    acute_shift: float = 0.0
    severity_shift: float = 0.0
    elective_share: float = 0.25


@dataclass
class Labs:
    """Lab draws in standard units (the site's coding turns them into its codes and units)."""

    stay: np.ndarray  # int, index into the stay arrays
    lab: np.ndarray  # int, index into catalog.LABS
    time: np.ndarray  # int64 microseconds since the epoch
    value: np.ndarray  # float64, standard units, rounded as the lab reports


@dataclass
class Cohort:
    """One hospital's simulated patients (arrays of length n) and stays (length m)."""

    female: np.ndarray
    birth: np.ndarray  # int64 us, midnight
    chronic: dict[str, np.ndarray]  # per patient, bool
    # stays, ordered by patient then time
    patient: np.ndarray
    number: np.ndarray  # 0 for a patient's first stay
    admit: np.ndarray
    discharge: np.ndarray
    age: np.ndarray
    admission_type: np.ndarray  # index into ADMISSION_TYPES
    location: np.ndarray  # index into LOCATIONS
    severity: np.ndarray
    acute: dict[str, np.ndarray]
    secondary: dict[str, np.ndarray]  # read off the measured labs
    icu: np.ndarray
    icu_unit: np.ndarray
    icu_in: np.ndarray
    icu_out: np.ndarray
    died: np.ndarray
    long_stay: np.ndarray
    readmit30: np.ndarray  # realised: next admission within 30 days of discharge
    disposition: np.ndarray  # index into DISPOSITIONS
    labs: Labs

    @property
    def n_patients(self) -> int:
        return len(self.female)

    @property
    def n_stays(self) -> int:
        return len(self.patient)

    def has(self, key: str) -> np.ndarray:
        """Per stay: does the patient have condition `key` (chronic, acute or secondary)?"""
        if key in self.chronic:
            return self.chronic[key][self.patient]
        if key in self.acute:
            return self.acute[key]
        return self.secondary[key]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(intercept: float, coefs: dict[str, float], feats: dict[str, np.ndarray]) -> np.ndarray:
    out = np.full(len(next(iter(feats.values()))), intercept, dtype=np.float64)
    for name, coef in coefs.items():
        out += coef * feats[name].astype(np.float64)
    return out


def _bernoulli(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return rng.random(len(p)) < p


def _rise(t_days: np.ndarray) -> np.ndarray:
    """Shape of an acute rise: 0 at admission, peak 1 on day 2, slow return."""
    return (t_days / 2.0) * np.exp(1.0 - t_days / 2.0)


def _patients(rng: np.random.Generator, n: int, mix: CaseMix) -> dict[str, np.ndarray]:
    female = rng.random(n) < 0.5
    age = np.clip(rng.normal(mix.age_mean, mix.age_sd, n), 18.0, 95.0)
    age10 = (age - 65.0) / 10.0
    chronic: dict[str, np.ndarray] = {}
    for key, (b0, b_age, parents) in CHRONIC_MODEL.items():
        logit = b0 + b_age * age10 + mix.chronic_shift.get(key, 0.0)
        for parent, coef in parents.items():
            logit = logit + coef * chronic[parent]
        chronic[key] = _bernoulli(rng, sigmoid(logit))
    # Patient-level lab baselines (kept across stays).
    ckd_factor = np.where(chronic["ckd"], rng.uniform(1.7, 3.2, n), 1.0)
    cr_base = np.where(female, 0.74, 0.95) * np.exp(0.06 * age10 + rng.normal(0, 0.1, n))
    dm_glucose = 135.0 + 30.0 * np.abs(rng.normal(0, 1, n))
    hf_bnp = np.exp(rng.normal(6.3, 0.5, n))  # ~550 pg/mL median in heart failure
    return {
        "female": female,
        "age0": age,
        "chronic": chronic,
        "cr_base": cr_base * ckd_factor,
        "bun_base": 14.0 * np.exp(0.08 * age10) * np.where(chronic["ckd"], 2.0, 1.0),
        "glucose_base": np.where(chronic["dm"], dm_glucose, rng.normal(102, 8, n)),
        "bnp_base": np.where(chronic["hf"], hf_bnp, np.exp(rng.normal(3.6, 0.5, n) + 0.2 * age10)),
        "hgb_base": (np.where(female, 12.8, 14.2) - 1.4 * chronic["ckd"]
                     - 0.2 * np.maximum(age10, 0)),
    }


def _stays(rng: np.random.Generator, pat: dict, idx: np.ndarray, admit: np.ndarray, k: int,
           mix: CaseMix) -> dict[str, np.ndarray]:
    """Simulate stay number `k` for patients `idx` admitted at `admit` (vectorised)."""
    m = len(idx)
    age = pat["age0"][idx] + (admit - pat["admit0"][idx]) / DAY_US / YEAR_DAYS
    f: dict[str, np.ndarray] = {"age10": (age - 65.0) / 10.0}
    for key, flags in pat["chronic"].items():
        f[key] = flags[idx]
    f["z"] = rng.normal(mix.severity_shift, 1.0, m)
    for key, (b0, coefs) in ACUTE_MODEL.items():
        f[key] = _bernoulli(rng, sigmoid(_logit(b0 + mix.acute_shift, coefs, f)))
    acute_any = f["pneumonia"] | f["sepsis"] | f["aki"] | f["effusion"]
    elective = ~acute_any & (rng.random(m) < mix.elective_share / 0.7)
    urgent = ~elective & (rng.random(m) < 0.2)
    adm_type = np.where(elective, 2, np.where(urgent, 1, 0))
    location = np.where(
        adm_type == 0, 0,
        np.where(adm_type == 1, np.where(rng.random(m) < 0.5, 2, 1),
                 np.where(rng.random(m) < 0.5, 1, 3)))
    f["elective"] = elective
    zp = np.maximum(f["z"], 0.0)

    # Lab trajectory parameters (standard units).
    a_cr = f["aki"] * rng.uniform(0.45, 1.1, m) + 0.15 * f["sepsis"] + 0.08 * zp
    cr_peak = pat["cr_base"][idx] * np.exp(a_cr)
    lac0 = 1.0 + 0.25 * zp + f["sepsis"] * (1.0 + 1.3 * zp + rng.exponential(0.8, m))
    wbc0 = np.clip(7.5 + 6.5 * f["sepsis"] + 4.0 * f["pneumonia"] + 1.2 * f["z"]
                   + rng.normal(0, 1.5, m), 1.5, None)
    stress = 25.0 * f["sepsis"] + 8.0 * zp
    glucose = pat["glucose_base"][idx] + stress
    bnp0 = pat["bnp_base"][idx] * np.exp(0.35 * f["z"] * f["hf"] + rng.normal(0, 0.2, m))
    na0 = 139.0 - 2.5 * f["hf"] - 2.0 * f["sepsis"] + rng.normal(0, 2.5, m)
    hgb0 = pat["hgb_base"][idx] + rng.normal(0, 0.8, m) - 0.5 * f["sepsis"]
    f["creatinine"] = np.log2(cr_peak / 1.0)
    f["lactate"] = lac0 - 1.0
    f["wbc"] = np.abs(wbc0 - 8.0) / 5.0
    f["glucose"] = np.maximum(glucose - 110.0, 0.0) / 60.0
    f["bnp"] = np.maximum(np.log(bnp0 / 100.0), 0.0)
    f["sodium"] = np.abs(na0 - 139.0) / 4.0
    f["anemia"] = np.maximum(11.0 - hgb0, 0.0) / 2.0
    f["prior_stays"] = np.full(m, min(k, 3), dtype=np.float64)

    # Outcomes.
    icu = _bernoulli(rng, sigmoid(_logit(*OUTCOME_MODEL["icu"], f)))
    f["icu"] = icu
    died = _bernoulli(rng, sigmoid(_logit(*OUTCOME_MODEL["death"], f)))
    long_stay = _bernoulli(rng, sigmoid(_logit(*OUTCOME_MODEL["long_stay"], f)))
    f["long_stay"] = long_stay
    los = np.where(long_stay, 7.05 + rng.gamma(1.5, 3.0, m), 0.4 + 6.5 * rng.beta(2.0, 3.5, m))
    p_snf = sigmoid(-3.2 + 0.7 * f["age10"] + 1.0 * long_stay + 0.5 * icu + 0.3 * f["hf"])
    u = rng.random(m)
    p_rehab = 0.02 + 0.08 * long_stay
    disposition = np.select(
        [died, u < p_snf, u < p_snf + p_rehab, u < p_snf + p_rehab + 0.18], [4, 2, 3, 1], 0)
    f["snf"] = disposition == 2
    readmit = ~died & _bernoulli(rng, sigmoid(_logit(*OUTCOME_MODEL["readmit"], f)))
    if k == MAX_STAYS - 1:
        readmit[:] = False

    hour0 = np.where(elective, rng.uniform(7, 10, m), rng.uniform(0, 24, m))
    admit = (admit // DAY_US) * DAY_US + (hour0 * HOUR_US).astype(np.int64)
    discharge = admit + (los * DAY_US).astype(np.int64)
    icu_unit = np.where(f["sepsis"] | f["pneumonia"] | f["copd"], 0,
                        np.where(f["hf"], 2, np.where(elective, 1, 0)))
    icu_in = admit + (rng.uniform(0.04, 0.3, m) * np.minimum(los, 1.0) * DAY_US).astype(np.int64)
    icu_len = (rng.gamma(2.0, 1.2, m) * DAY_US).astype(np.int64)
    icu_out = np.minimum(icu_in + icu_len, discharge - HOUR_US)
    return {
        "patient": idx, "number": np.full(m, k), "admit": admit, "discharge": discharge,
        "los": los, "age": age, "admission_type": adm_type, "location": location,
        "severity": f["z"], **{key: f[key] for key in ACUTE_MODEL},
        "icu": icu, "icu_unit": icu_unit, "icu_in": icu_in, "icu_out": icu_out,
        "died": died, "long_stay": long_stay, "readmit": readmit, "disposition": disposition,
        "a_cr": a_cr, "lac0": lac0, "wbc0": wbc0, "glucose": glucose, "stress": stress,
        "bnp0": bnp0, "na0": na0, "hgb0": hgb0,
    }


def _labs(rng: np.random.Generator, pat: dict, st: dict[str, np.ndarray]) -> Labs:
    """Daily panels (BMP + CBC), lactate on days 0-1 when indicated, BNP on day 0."""
    m = len(st["patient"])
    p = st["patient"]
    n_days = np.clip(np.ceil(st["los"] - 0.12), 1, MAX_LAB_DAYS).astype(np.int64)
    stay = np.repeat(np.arange(m), n_days)
    day = np.arange(len(stay)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    t = day + np.where(day == 0, rng.uniform(0.02, 0.10, len(stay)),
                       0.04 + rng.uniform(0, 0.08, len(stay)))
    g = _rise(t)
    a_cr = st["a_cr"][stay]
    dm = pat["chronic"]["dm"][p][stay]
    values = {
        "creatinine": pat["cr_base"][p][stay] * np.exp(a_cr * g + rng.normal(0, 0.05, len(t))),
        "bun": pat["bun_base"][p][stay] * np.exp(1.1 * a_cr * g + rng.normal(0, 0.08, len(t))),
        "glucose": (pat["glucose_base"][p][stay] + st["stress"][stay] * np.exp(-t / 2.0))
        * np.exp(rng.normal(0, np.where(dm, 0.2, 0.1))),
        "wbc": np.clip(7.5 + (st["wbc0"][stay] - 7.5) * np.exp(-t / 3.0)
                       + rng.normal(0, 0.6, len(t)), 0.8, None),
        "hemoglobin": np.clip(st["hgb0"][stay] - 0.12 * t + rng.normal(0, 0.3, len(t)), 5, None),
        "sodium": st["na0"][stay] + (139.0 - st["na0"][stay]) * (1 - np.exp(-t / 3.0))
        + rng.normal(0, 1.2, len(t)),
        "potassium": np.clip(4.1 + 0.4 * pat["chronic"]["ckd"][p][stay] + 0.6 * st["aki"][stay] * g
                             + rng.normal(0, 0.25, len(t)), 2.5, 7.0),
    }
    parts = [(stay, np.full(len(stay), LAB_INDEX[k]), t, v) for k, v in values.items()]
    # Lactate when sepsis is suspected, on the first two draws.
    suspect = st["sepsis"] | st["icu"] | (st["severity"] > 1.2) | (
        st["pneumonia"] & (rng.random(m) < 0.5))
    sel = suspect[stay] & (day <= 1)
    lac = 1.0 + (st["lac0"][stay[sel]] - 1.0) * np.exp(-t[sel] / 1.5)
    lac = np.maximum(lac * np.exp(rng.normal(0, 0.1, sel.sum())), 0.4)
    parts.append((stay[sel], np.full(sel.sum(), LAB_INDEX["lactate"]), t[sel], lac))
    # BNP at admission when heart failure or dyspnoea is on the table.
    chronic = pat["chronic"]
    want_bnp = chronic["hf"][p] | chronic["copd"][p] | st["pneumonia"] | st["effusion"] | (
        rng.random(m) < 0.1)
    sel = want_bnp[stay] & (day == 0)
    bnp = st["bnp0"][stay[sel]] * np.exp(rng.normal(0, 0.15, sel.sum()))
    parts.append((stay[sel], np.full(sel.sum(), LAB_INDEX["bnp"]), t[sel], bnp))

    s = np.concatenate([x[0] for x in parts])
    lab = np.concatenate([x[1] for x in parts])
    tt = np.concatenate([x[2] for x in parts])
    val = np.concatenate([x[3] for x in parts])
    time = st["admit"][s] + (tt * DAY_US).astype(np.int64)
    return Labs(stay=s, lab=lab, time=time, value=val)


def simulate(rng: np.random.Generator, n: int, mix: CaseMix) -> Cohort:
    """Draw `n` patients and all their hospital stays from the generative model."""
    pat = _patients(rng, n, mix)
    span = FIRST_ADMIT_TO - FIRST_ADMIT_FROM
    admit0 = FIRST_ADMIT_FROM + (rng.random(n) * span).astype(np.int64)
    pat["admit0"] = admit0
    burden = sum(pat["chronic"][k].astype(np.float64) for k in ("dm", "ckd", "hf", "copd"))
    rounds = []
    idx, admit = np.arange(n), admit0
    for k in range(MAX_STAYS):
        if len(idx) == 0:
            break
        st = _stays(rng, pat, idx, admit, k, mix)
        rounds.append(st)
        alive = ~st["died"]
        readmit = st["readmit"]
        later = alive & ~readmit & (rng.random(len(idx)) < sigmoid(-1.4 + 0.35 * burden[idx]))
        # Admission times are moved to a random hour of the drawn day, so keep a
        # day's margin on both sides of the 30-day boundary.
        gap_days = np.where(readmit, rng.uniform(1.0, 28.9, len(idx)),
                            32.0 + rng.exponential(365.0, len(idx)))
        nxt = st["discharge"] + (gap_days * DAY_US).astype(np.int64)
        keep = readmit | (later & (nxt < FOLLOW_UP_END))
        idx, admit = idx[keep], nxt[keep]

    st = {key: np.concatenate([r[key] for r in rounds]) for key in rounds[0]}
    order = np.lexsort((st["number"], st["patient"]))
    st = {key: v[order] for key, v in st.items()}
    labs = _labs(rng, pat, st)
    labs.value = _round_standard(labs.lab, labs.value)
    secondary = _secondary(labs, len(st["patient"]))
    birth_days = np.floor((admit0 - (pat["age0"] * YEAR_DAYS * DAY_US).astype(np.int64)) / DAY_US)
    return Cohort(
        female=pat["female"], birth=birth_days.astype(np.int64) * DAY_US, chronic=pat["chronic"],
        patient=st["patient"], number=st["number"], admit=st["admit"],
        discharge=st["discharge"], age=st["age"], admission_type=st["admission_type"],
        location=st["location"], severity=st["severity"],
        acute={key: st[key] for key in ACUTE_MODEL}, secondary=secondary,
        icu=st["icu"], icu_unit=st["icu_unit"], icu_in=st["icu_in"], icu_out=st["icu_out"],
        died=st["died"], long_stay=st["long_stay"], readmit30=st["readmit"],
        disposition=st["disposition"], labs=labs,
    )


def _round_standard(lab: np.ndarray, value: np.ndarray) -> np.ndarray:
    decimals = np.array([x.decimals for x in LABS])[lab]
    scale = 10.0 ** decimals
    return np.round(value * scale) / scale


def _secondary(labs: Labs, m: int) -> dict[str, np.ndarray]:
    """Conditions a clinician reads off the measured labs (hyponatremia, hyperkalemia, anemia)."""

    def extreme(key: str, fn, init: float) -> np.ndarray:
        out = np.full(m, init)
        sel = labs.lab == LAB_INDEX[key]
        fn.at(out, labs.stay[sel], labs.value[sel])
        return out

    return {
        "hyponatremia": extreme("sodium", np.minimum, np.inf) < 133.0,
        "hyperkalemia": extreme("potassium", np.maximum, -np.inf) > 5.3,
        "anemia": extreme("hemoglobin", np.minimum, np.inf) < 10.0,
    }
