"""The EHR foundation model: config, transformer and frozen side encoders."""

from fedehr.shared.model.config import ModelConfig
from fedehr.shared.model.transformer import EHRModel, Generated

__all__ = ["EHRModel", "Generated", "ModelConfig"]
