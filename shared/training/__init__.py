"""The one training loop: non-private (public anchor, baselines) and DP-SGD (sites)."""

from fedehr.shared.training.trainer import DPConfig, Ledger, TrainResult, evaluate, train

__all__ = ["DPConfig", "Ledger", "TrainResult", "evaluate", "train"]
