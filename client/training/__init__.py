"""The training loop shared by every trainer: non-private and DP-SGD (Opacus)."""

from fedehr.client.training.trainer import DPConfig, TrainResult, evaluate, train

__all__ = ["DPConfig", "TrainResult", "evaluate", "train"]
