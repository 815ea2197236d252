"""Aggregation strategies: Flower's own, chosen by name in federation.yaml.

| name          | strategy                                  | paper                          |
|---------------|-------------------------------------------|--------------------------------|
| fedavg        | flwr FedAvg                               | McMahan et al., 2017           |
| fedprox       | flwr FedProx (sites add the proximal term)| Li et al., 2020                |
| fedadam       | flwr FedAdam (server-side Adam)           | Reddi et al., 2021             |
| median        | flwr FedMedian (coordinate-wise median)   | Yin et al., 2018               |
| trimmed_mean  | flwr FedTrimmedAvg                        | Yin et al., 2018               |

Every update is screened (`fedehr.server.screening`) before any of these
sees it. FedAvg and FedProx aggregate by streaming (each update folded into a
running mean as it arrives, `fedehr.server.streaming`); FedAdam takes that
streamed mean as its one input; median and trimmed_mean need every update at
once, so with them the server holds all accepted updates of a round.

Server-side state (FedAdam's moments) is saved with each round so a
resumed federation continues exactly.
"""

from __future__ import annotations

import numpy as np
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fedehr.server.config import StrategyConfig
from fedehr.shared import messages as M


def per_site_metrics_only(replies: list[RecordDict], weighting_key: str) -> MetricRecord:
    """No cross-site mean of training metrics: the server reads each site's own (its
    ledger history is a list whose length differs between sites, which Flower's
    element-wise mean cannot take, and a mean of histories would mean nothing)."""
    return MetricRecord()


def build_strategy(cfg: StrategyConfig, min_sites: int) -> Strategy:
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=min_sites,
                  min_evaluate_nodes=min_sites, min_available_nodes=min_sites,
                  weighted_by_key=M.NUM_EXAMPLES, train_metrics_aggr_fn=per_site_metrics_only)
    if cfg.name == "fedavg":
        return FedAvg(**common)
    if cfg.name == "fedprox":
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    if cfg.name == "fedadam":
        return FedAdam(**common, eta=cfg.server_lr)
    if cfg.name == "median":
        return FedMedian(**common)
    return FedTrimmedAvg(**common, beta=cfg.trim_fraction)


# How a strategy's updates can be aggregated (see `aggregation_mode`).
MEAN, SERVER_STEP, BUFFERED = "mean", "server-step", "buffered"


def aggregation_mode(strategy: Strategy) -> str:
    """MEAN: the result is the weighted mean of the updates (FedAvg's own aggregation).
    SERVER_STEP: a FedOpt strategy, whose aggregation is that mean followed by a server
    optimiser step, so it can be given the streamed mean as a single reply.
    BUFFERED: anything else (median, trimmed mean) needs every update at once."""
    aggregate = type(strategy).aggregate_train
    if isinstance(strategy, FedAvg) and aggregate is FedAvg.aggregate_train:
        return MEAN
    if isinstance(strategy, FedOpt):
        return SERVER_STEP
    return BUFFERED


# FedOpt-family attributes that hold server state between rounds.
_STATE_ATTRS = ("current_arrays", "m_t", "v_t")


def strategy_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """Flat name -> array dict of the strategy's server-side state (empty for FedAvg)."""
    state = {}
    for attr in _STATE_ATTRS:
        value = getattr(strategy, attr, None)
        for key, arr in (value or {}).items():
            state[f"{attr}/{key}"] = np.ascontiguousarray(arr)
    return state


def restore_strategy_state(strategy: Strategy, state: dict[str, np.ndarray]) -> None:
    for attr in _STATE_ATTRS:
        prefix = f"{attr}/"
        values = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if values and hasattr(strategy, attr):
            setattr(strategy, attr, values)
