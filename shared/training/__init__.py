"""The plain training loop (public data, baselines); DP-SGD is in fedehr.client.privacy."""

from fedehr.shared.training.trainer import TrainResult, evaluate, train, train_early_stopped

__all__ = ["TrainResult", "evaluate", "train", "train_early_stopped"]
