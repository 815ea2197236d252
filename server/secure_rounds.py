"""Training rounds under secure aggregation: the server learns only the sum of the updates.

Flower 1.42 offers SecAgg+ (Bell et al., "Secure Single-Server Aggregation
with (Poly)Logarithmic Overhead", CCS 2020) only on its legacy path: a
`LegacyContext`, a legacy strategy and `SecAggPlusWorkflow`, with sites running
`secaggplus_mod` in front of a NumPyClient (`fedehr.client.secure_app`). One
round is four message exchanges: setup (public keys), share keys (encrypted
Shamir shares of each site's mask seeds), collect masked vectors (the sites
train and send their quantized update plus pairwise and private masks) and
unmask (the sites send the shares that remove the masks of the sum).

What crosses to the server per site: public keys, encrypted shares it cannot
read, one masked integer vector that looks uniformly random, mask shares, and
the site's aggregate metrics (epsilon, loss, patients). The workflow sums the
masked vectors, removes the masks of the sum and hands the strategy one
weighted mean, the same object for every site: `SumOnly` keeps it.

Sites send their update (trained minus global weights), not their weights.
SecAgg+ clips every value to [-clipping_range, clipping_range] and quantizes
it into `quantization_range` integer levels; updates are small (AdamW moves a
weight by about lr per step), so a range of 4 x lr x steps holds them whole
and the quantization step is far below float32 resolution of the weights.

The clip applies to the *weighted* values (update x patients / max_weight),
so a site's own range is clipping_range x max_weight / patients and the
quantization step grows with max_weight: it is derived from the sizes the
sites reported in the previous round (twice the largest, which Flower's
FitRes shows the server in any case), and only a run's first round uses a
generous 1,000,000.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedehr.server.config import FederationConfig
from fedehr.server.node_names import NodeNames
from fedehr.shared import messages as M

MODULUS_RANGE = 2**32  # SecAgg+'s mask arithmetic (Flower's maximum)
MAX_QUANTIZATION_RANGE = 2**30  # Flower's stochastic rounding casts to int32
FIRST_ROUND_MAX_WEIGHT = 1_000_000  # before any site has reported its size


@dataclass(frozen=True)
class SecAggParams:
    num_shares: int | float
    reconstruction_threshold: int | float
    clipping_range: float
    quantization_range: int
    max_weight: int
    modulus_range: int = MODULUS_RANGE

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def quantization_range(sites: int) -> int:
    """The finest power-of-two range whose sum over `sites` cannot wrap the modulus."""
    bits = 32 - math.ceil(math.log2(sites + 1))
    return min(MAX_QUANTIZATION_RANGE, 2**bits)


def derived_max_weight(reported_patients: list[float]) -> int:
    """Twice the largest site's reported training patients, as a power of two."""
    if not reported_patients:
        return FIRST_ROUND_MAX_WEIGHT
    return 2 ** math.ceil(math.log2(max(2.0 * max(reported_patients), 2.0)))


def weights_known_at_start(counts_public: dict[str, float], sites: list[str]) -> list[float]:
    """The update weights known before round 1, from the warm start's evaluation replies.

    [1.0] when every listed site said it keeps its patient count private (it weighs 1),
    so SecAgg+'s first round needs no room for patient counts; [] (unknown) otherwise.
    """
    if counts_public and not any(counts_public.values()) and set(sites) <= set(counts_public):
        return [1.0]
    return []


def secagg_params(cfg: FederationConfig, sites: int,
                  reported_patients: list[float] | None = None) -> SecAggParams:
    """SecAgg+ settings for a round with (at most) `sites` participants.

    `reported_patients`: the sites' training patients from the previous round.
    """
    spec = cfg.secagg
    shares = spec.num_shares if spec.num_shares is not None else 1.0  # 1.0: every site
    if spec.reconstruction_threshold is not None:
        threshold: int | float = spec.reconstruction_threshold
    else:
        n = spec.num_shares or sites
        threshold = max(2, n // 2 + 1)  # a majority: tolerates a minority dropping out
        threshold = min(threshold, n - 1) if spec.num_shares else threshold
    clip = spec.clipping_range or 4.0 * cfg.local.lr * cfg.local.steps
    return SecAggParams(num_shares=shares, reconstruction_threshold=threshold,
                        clipping_range=float(clip), quantization_range=quantization_range(sites),
                        max_weight=spec.max_weight or derived_max_weight(reported_patients or []))


class SumOnly(FedAvg):
    """Legacy FedAvg sampling; `aggregate_fit` keeps the one weighted mean SecAgg+ unmasked.

    Under SecAggPlusWorkflow every site's FitRes carries the same Parameters
    object (the unmasked weighted mean of the updates) and the site's own
    aggregate metrics; no individual update is ever in reach.
    """

    def __init__(self, *, min_sites: int, fit_config: dict):
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=min_sites,
                         min_evaluate_clients=min_sites, min_available_clients=min_sites,
                         on_fit_config_fn=lambda _rnd: fit_config, accept_failures=True)
        self.mean_update: list[np.ndarray] | None = None
        self.site_metrics: dict[str, dict] = {}

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            return None, {}
        sums = {id(fit_res.parameters) for _, fit_res in results}
        if len(sums) != 1:  # would mean an individual update reached us: refuse to use it
            raise RuntimeError("secure aggregation handed over more than one update")
        self.mean_update = parameters_to_ndarrays(results[0][1].parameters)
        for proxy, fit_res in results:
            metrics = dict(fit_res.metrics)
            site = str(metrics.pop(M.SITE_NAME, f"node-{proxy.node_id}"))
            self.site_metrics[site] = {k: float(v) for k, v in metrics.items()
                                       if isinstance(v, int | float)}
            if isinstance(metrics.get(M.LEDGER_HISTORY), str):  # the site's ledger, as JSON
                self.site_metrics[site][M.LEDGER_HISTORY] = metrics[M.LEDGER_HISTORY]
        return results[0][1].parameters, {}


@dataclass
class SecureRound:
    """What one secure round gave the server."""

    mean_update: list[np.ndarray] | None  # weighted mean of the updates; None: protocol halted
    site_metrics: dict[str, dict]  # site -> its aggregate metrics (epsilon, loss, patients)
    failed: list[str] = field(default_factory=list)  # error replies, with the sites' reasons
    bytes_in: int = 0  # bytes of every reply (keys, shares, masked vectors)
    stage_seconds: list[float] = field(default_factory=list)  # per message exchange
    params: SecAggParams | None = None


class _Tally:
    """Delegates to the ServerApp's grid; counts reply bytes, notes errors and stage times."""

    def __init__(self, grid: Grid, outcome: SecureRound, names: NodeNames):
        self._grid, self._outcome, self._names = grid, outcome, names

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        started = time.monotonic()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._outcome.stage_seconds.append(round(time.monotonic() - started, 2))
        for reply in replies:
            if reply.has_error():
                self._outcome.failed.append(self._names.failure(reply))
            else:
                self._outcome.bytes_in += _content_bytes(reply.content)
        return replies


def _content_bytes(content: RecordDict) -> int:
    total = 0
    for record in content.array_records.values():
        total += sum(len(a.data) for a in record.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) for v in items if isinstance(v, bytes))
    return total


def fit_config(round_config: dict, names: list[str], params: SecAggParams,
               cfg: FederationConfig) -> dict:
    """The round config of a plain round plus what a site needs for SecAgg+.

    FedProx's server side is FedAvg's; its part is the proximal term the sites
    add, which Flower's FedProx would have put in the config.
    """
    extra = {M.PROXIMAL_MU: cfg.strategy.proximal_mu} if cfg.strategy.name == "fedprox" else {}
    return {**round_config, **extra, M.ARRAY_NAMES: json.dumps(names),
            M.SECAGG_CLIPPING_RANGE: params.clipping_range,
            M.SECAGG_MAX_WEIGHT: params.max_weight}


def run_secure_round(grid: Grid, rnd: int, global_arrays: dict[str, np.ndarray],
                     round_config: dict, cfg: FederationConfig,
                     reported_patients: list[float] | None = None,
                     nodes_named: NodeNames | None = None) -> SecureRound:
    """One training round through SecAggPlusWorkflow; returns the mean update only."""
    nodes = list(grid.get_node_ids())
    params = secagg_params(cfg, max(len(nodes), len(cfg.sites)), reported_patients)
    names = list(global_arrays)
    strategy = SumOnly(min_sites=cfg.min_sites,
                       fit_config=fit_config(round_config, names, params, cfg))
    manager = SimpleClientManager()
    for node_id in nodes:
        manager.register(GridClientProxy(node_id, grid, grid.run.run_id))
    base = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                   run_config={})
    context = LegacyContext(base, config=ServerConfig(num_rounds=cfg.rounds),
                            strategy=strategy, client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: rnd})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([global_arrays[n] for n in names]), keep_input=True)
    workflow = SecAggPlusWorkflow(
        params.num_shares, params.reconstruction_threshold, max_weight=params.max_weight,
        clipping_range=params.clipping_range, quantization_range=params.quantization_range,
        modulus_range=params.modulus_range, timeout=cfg.round_timeout)
    outcome = SecureRound(mean_update=None, site_metrics={}, params=params)
    workflow(_Tally(grid, outcome, nodes_named or NodeNames()), context)
    outcome.mean_update = strategy.mean_update
    outcome.site_metrics = strategy.site_metrics
    return outcome


def apply_mean_update(global_arrays: dict[str, np.ndarray], mean_update: list[np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """New global weights: global + weighted mean update (FedAvg's step), in float64."""
    if len(mean_update) != len(global_arrays):
        raise ValueError(f"the aggregate has {len(mean_update)} arrays, the model "
                         f"{len(global_arrays)}")
    return {name: (ref.astype(np.float64) + np.asarray(upd, dtype=np.float64).reshape(ref.shape)
                   ).astype(ref.dtype)
            for (name, ref), upd in zip(global_arrays.items(), mean_update, strict=True)}
