"""Signed checkpoints: safetensors weights, vocabulary, model card, Ed25519 signature."""

from fedehr.shared.checkpoint.card import CheckpointError, ModelCard
from fedehr.shared.checkpoint.format import load, save, verify
from fedehr.shared.checkpoint.signing import (
    fingerprint,
    generate_signing_key,
    load_public_key,
    load_signing_key,
)

__all__ = ["CheckpointError", "ModelCard", "fingerprint", "generate_signing_key", "load",
           "load_public_key", "load_signing_key", "save", "verify"]
