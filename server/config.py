"""federation.yaml: what the consortium operator decides for a federated run.

Example (relative paths are relative to this file):

    name: demo
    workdir: federation            # checkpoints, reports, Flower state, logs
    pki: pki                       # from `fedehr pki init/server/site`
    superlink: {host: 127.0.0.1, port: 9093}
    sites: [hospital_a, hospital_b, hospital_c]
    min_sites: 2
    rounds: 3
    strategy: {name: fedavg}
    model: {preset: tiny}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedehr.shared.config import load_config

STRATEGIES = ("fedavg", "fedprox", "fedadam", "median", "trimmed_mean")


@dataclass
class SuperLinkConfig:
    host: str = "127.0.0.1"
    port: int = 9093
    insecure: bool = False  # tests of the insecure path only


@dataclass
class StrategyConfig:
    name: Literal["fedavg", "fedprox", "fedadam", "median", "trimmed_mean"] = "fedavg"
    proximal_mu: float = 0.01  # FedProx
    server_lr: float = 0.01  # FedAdam's eta
    trim_fraction: float = 0.2  # trimmed mean: share cut at each end


@dataclass
class ModelSpec:
    preset: Literal["tiny", "small", "base"] = "tiny"
    max_len: int = 128
    notes: bool = True
    images: bool = True
    pro: bool = True


@dataclass
class VocabularySpec:
    min_count: int = 10
    rounds_timeout: float = 300.0
    candidates: Path | None = None  # public code list, one per line; default: anchor + catalogue


@dataclass
class TrainSpec:
    steps: int = 30
    batch_size: int = 32
    lr: float = 1e-3


@dataclass
class WarmStartSpec:
    enabled: bool = True
    steps: int = 150
    batch_size: int = 32
    lr: float = 2e-3
    steps_per_round: int = 0  # anchor steps after each aggregation (keeps the anchor known)


@dataclass
class UpdateBounds:
    max_update_norm: float = 100.0  # L2 norm of (site weights - global weights)


@dataclass
class FederationConfig:
    name: str
    workdir: Path
    pki: Path | None = None
    superlink: SuperLinkConfig = field(default_factory=SuperLinkConfig)
    sites: list[str] = field(default_factory=list)
    min_sites: int = 2
    rounds: int = 3
    round_timeout: float = 300.0
    seed: int = 0
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    vocabulary: VocabularySpec = field(default_factory=VocabularySpec)
    local: TrainSpec = field(default_factory=TrainSpec)
    warm_start: WarmStartSpec = field(default_factory=WarmStartSpec)
    bounds: UpdateBounds = field(default_factory=UpdateBounds)
    anchor: Path | None = None  # MEDS root or wheel; default: fetch into the user cache
    registry_port: int | None = None
    metrics_port: int | None = None

    def validate(self) -> None:
        if self.min_sites < 1:
            raise ValueError("min_sites: must be at least 1")
        if self.sites and self.min_sites > len(self.sites):
            raise ValueError(f"min_sites: is {self.min_sites} but only {len(self.sites)} "
                             "sites are listed; lower min_sites or list more sites")
        if self.rounds < 1:
            raise ValueError("rounds: must be at least 1")
        if not self.superlink.insecure and self.pki is None:
            raise ValueError("pki: is required for TLS; run `fedehr pki init` and give its "
                             "folder")

    @property
    def checkpoints_dir(self) -> Path:
        return self.workdir / "checkpoints"

    @property
    def status_path(self) -> Path:
        return self.workdir / "status.json"

    @property
    def audit_path(self) -> Path:
        """The consortium's hash-chained audit log (fedehr.shared.audit)."""
        return self.workdir / "audit.jsonl"

    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"


def load_federation_config(path: str | Path) -> FederationConfig:
    return load_config(path, FederationConfig)
