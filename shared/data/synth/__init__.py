"""Synthetic hospitals: the embedded default data every demo and test runs on.

`synthesize(out, sites=3, patients=2000, seed=0)` writes one MEDS dataset per
hospital (out/hospital_a, out/hospital_b, ...) from a documented latent
generative model (docs/synthetic-hospitals.md): patients with age, sex and
comorbidities; stays with a latent severity that drives lab trajectories and
outcomes (death, 30-day readmission, long stay, ICU transfer) through logistic
models; diagnoses coded with each site's habits; labs in LOINC or local codes;
drugs with RxNorm parents; discharge summaries; PROMIS scores; chest imaging
with embeddings in a sidecar.
"""

from fedehr.shared.data.synth.hospitals import (
    SiteProfile,
    SiteSummary,
    site_profiles,
    synthesize,
)

__all__ = ["SiteProfile", "SiteSummary", "site_profiles", "synthesize"]
