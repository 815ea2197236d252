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
    secure_aggregation: false      # true: SecAgg+, the server sees only the sum of updates
    secagg: {}                     # SecAgg+ settings (SecAggSpec); the defaults are derived

With `secure_aggregation: true` the server never holds a single site's update,
so it cannot screen one: `bounds.max_update_norm` and the NaN/shape checks are
not applied to training updates, only median/trimmed-mean-free strategies
(fedavg, fedprox) are possible, and the audit log says so at run start
(docs/federation.md, "Secure aggregation").
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
    # benchmarks/dp_recipe_sweep.py (tuning splits): under DP noise AdamW moves each
    # weight about lr per step, so a 4x batch needs a 4x learning rate to pay off
    steps: int = 20
    batch_size: int = 128
    lr: float = 8e-3
    # "site": the embedding and output rows of tokens only the anchor holds stay as the
    # warm start left them (under DP their gradient is noise alone); "all": every row trains
    train_rows: Literal["all", "site"] = "all"
    # "float16": sites send (trained - global) in float16, half the upload; applied after
    # the DP noise (shared/update_compression.py). Secure aggregation quantises by itself.
    update_compression: Literal["none", "float16"] = "none"
    # "float16": the global model goes to the sites in float16, half the download; with
    # float16 updates the server adds the sites' changes to its float32 weights (the
    # training download of secure rounds, Flower's SecAgg+ workflow, stays float32)
    download_compression: Literal["none", "float16"] = "none"
    # public anchor windows in every DP-SGD batch at the sites, clipped and noised with the
    # patients' at no privacy cost (client/privacy/public_mix.py). dp_recipe_sweep.py, 3 data
    # seeds, tuning splits: 32 keeps the anchor's loss 2.2-2.4 nats lower and raises the probe
    # on every seed (+0.011 to +0.018); 0: the patients' windows only
    anchor_per_step: int = 32


@dataclass
class WarmStartSpec:
    enabled: bool = True
    # early_stopping: `steps` is the most; the warm start stops when the anchor's tuning
    # loss stops falling and keeps its best weights (a cosine-decayed rate, clipped)
    early_stopping: bool = True
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    # steps between tuning-loss measurements: 25 for the demo's 100 patients (they overfit
    # within ~100 steps); a large public set (the full MIMIC-IV) trains for thousands of
    # steps, and measuring its tuning split every 25 would cost more than the training
    eval_every: int = 25
    steps_per_round: int = 0  # anchor steps after each aggregation (keeps the anchor known)


@dataclass
class UpdateBounds:
    max_update_norm: float = 100.0  # L2 norm of (site weights - global weights)


@dataclass
class SecAggSpec:
    """SecAgg+ settings (Flower's legacy SecAggPlusWorkflow); None means derived.

    Sites send their update (trained minus global weights), not their weights:
    deltas are small, so the range SecAgg+ quantizes into is small and fine.
    """

    num_shares: int | None = None  # None: every site gets a share of every other site's keys
    reconstruction_threshold: int | None = None  # None: a majority of num_shares, at least 2
    clipping_range: float | None = None  # bound on |update| per weight; None: 4 x lr x steps
    # Most training patients a site may have (update weights <= this). None: derived, from
    # the sizes the sites reported in the run's previous round (x2), else 1,000,000.
    max_weight: int | None = None

    def validate(self) -> None:
        if self.num_shares is not None and self.num_shares < 3:
            raise ValueError("num_shares: must be at least 3 (or left out: every site)")
        if self.reconstruction_threshold is not None and (
                self.reconstruction_threshold < 2 or
                (self.num_shares is not None and
                 self.reconstruction_threshold >= self.num_shares)):
            raise ValueError("reconstruction_threshold: must be at least 2 and below "
                             "num_shares; leave it out for a majority of the shares")
        if self.clipping_range is not None and self.clipping_range <= 0:
            raise ValueError("clipping_range: must be > 0; leave it out to derive it from "
                             "local.lr x local.steps")
        if self.max_weight is not None and self.max_weight < 1:
            raise ValueError("max_weight: must be at least 1 (the largest site's patients)")


SECURE_STRATEGIES = ("fedavg", "fedprox")  # need only the sum of the updates


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
    # torch threads of the ServerApp (warm start, anchor evaluation, aggregation). One by
    # default: on cores shared with SuperNodes, two threads made the warm start 1.5-10x slower.
    threads: int = 1
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    vocabulary: VocabularySpec = field(default_factory=VocabularySpec)
    local: TrainSpec = field(default_factory=TrainSpec)
    warm_start: WarmStartSpec = field(default_factory=WarmStartSpec)
    bounds: UpdateBounds = field(default_factory=UpdateBounds)
    anchor: Path | None = None  # MEDS root or wheel; default: fetch into the user cache
    registry_port: int | None = None
    metrics_port: int | None = None
    secure_aggregation: bool = False
    secagg: SecAggSpec = field(default_factory=SecAggSpec)

    def validate(self) -> None:
        if self.min_sites < 1:
            raise ValueError("min_sites: must be at least 1")
        if self.sites and self.min_sites > len(self.sites):
            raise ValueError(f"min_sites: is {self.min_sites} but only {len(self.sites)} "
                             "sites are listed; lower min_sites or list more sites")
        if self.rounds < 1:
            raise ValueError("rounds: must be at least 1")
        if not 1 <= self.threads <= 256:
            raise ValueError("threads: must be between 1 and the server's cores (e.g. 1)")
        if self.secure_aggregation and self.strategy.name not in SECURE_STRATEGIES:
            raise ValueError(f"secure_aggregation: cannot run strategy {self.strategy.name!r}, "
                             "which needs every site's own update; use fedavg or fedprox")
        if self.secure_aggregation and self.local.update_compression != "none":
            raise ValueError("local.update_compression: applies to plain rounds; secure "
                             "aggregation quantises the updates by itself (leave it out)")
        if self.warm_start.eval_every < 1:
            raise ValueError("warm_start.eval_every: must be at least 1 step between the "
                             "anchor's tuning-loss measurements (e.g. 25)")
        if not 0 <= self.local.anchor_per_step <= 1024:
            raise ValueError("local.anchor_per_step: must be between 0 (off) and 1024 public "
                             "windows per step (e.g. 32)")
        if self.secure_aggregation and self.min_sites < 2:
            raise ValueError("secure_aggregation: needs min_sites of at least 2 (SecAgg+ "
                             "sums the updates of two or more sites)")
        if not self.superlink.insecure and self.pki is None:
            raise ValueError("pki: is required for TLS; run `fedehr pki init` and give its "
                             "folder")
        self._validate_ports()

    def _validate_ports(self) -> None:
        """Ports in range and one per service: two services on one port cannot both start."""
        ports = {"superlink.port": self.superlink.port, "registry_port": self.registry_port,
                 "metrics_port": self.metrics_port}
        taken: dict[int, str] = {}
        for name, port in ports.items():
            if port is None:
                continue
            if not 1 <= port <= 65535:
                raise ValueError(f"{name}: {port} is not a TCP port (1-65535)")
            if port in taken:
                raise ValueError(f"{name}: {port} is also {taken[port]}; give each service "
                                 "its own port")
            taken[port] = name

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
