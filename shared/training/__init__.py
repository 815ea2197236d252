"""The plain training loop (public data, baselines); DP-SGD is in fedehr.client.privacy."""

from fedehr.shared.training.trainer import TrainResult, evaluate, train

__all__ = ["TrainResult", "evaluate", "train"]
