"""A small consortium for registry tests: PKI, certificates, signed checkpoints, a server.

Real certificates from fedehr.shared.pki and real signed checkpoints from
fedehr.shared.checkpoint.save (a tiny stand-in model, or the real tiny
EHRModel when a test wants a realistic size); the registry runs on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fedehr.shared.checkpoint import ModelCard, save
from fedehr.shared.pki import (
    PKIPaths,
    consortium_signing_key,
    init_ca,
    issue_client_cert,
    issue_server_cert,
)
from fedehr.shared.registry.client import Credentials
from fedehr.shared.tokenizer.vocabulary import Vocabulary


@dataclass
class Consortium:
    pki: Path
    workdir: Path
    target: str = ""
    pulls: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def paths(self) -> PKIPaths:
        return PKIPaths.of(self.pki)

    def creds(self, name: str) -> Credentials:
        return Credentials(self.target, self.paths.ca_cert, self.paths.researcher_cert(name),
                           self.paths.researcher_key(name))

    def pull_args(self, name: str = "alice") -> dict:
        return {"ca": self.paths.ca_cert, "cert": self.paths.researcher_cert(name),
                "key": self.paths.researcher_key(name)}


def make_pki(root: Path) -> Path:
    init_ca(root, "Test Consortium CA")
    issue_server_cert(root, ["localhost"])
    issue_client_cert(root, "alice", "researcher")
    issue_client_cert(root, "olga", "operator")
    return root


def tiny_vocab(n_codes: int = 20) -> Vocabulary:
    return Vocabulary.build({f"LAB//{i}": 5 for i in range(n_codes)}, min_count=1)


def save_checkpoint(path: Path, pki: Path, rounds: int = 3, *, realistic: bool = False,
                    seed: int = 0) -> ModelCard:
    """A signed checkpoint at `path` (the real tiny EHRModel, ~16 MB, with `realistic`: at
    ~4 MB a stream cut after its first chunk was still, about one run in ten, wholly handed
    to gRPC before the cut was noticed, and counted as complete)."""
    torch.manual_seed(seed)
    if realistic:
        from fedehr.shared.model import EHRModel, ModelConfig

        vocab = tiny_vocab(16000)
        config = ModelConfig.tiny(vocab_size=len(vocab), note_dim=0, image_dim=0)
        model, arch = EHRModel(config), config.to_dict()
    else:
        vocab = tiny_vocab()
        arch = {"vocab_size": len(vocab), "d": 8}
        model = nn.Sequential(nn.Embedding(len(vocab), 8), nn.LayerNorm(8))
    history = [{"round": r, "anchor_loss": 5.0 - r, "site_eval_loss": {"site-a": 6.0 - r},
                "participants": ["site-a"]} for r in range(1, rounds + 1)]
    card = ModelCard(architecture=arch, rounds=rounds,
                     training={"strategy": "fedavg", "history": history},
                     privacy={"site-a": {"epsilon": 1.5 * rounds, "delta": 1e-5,
                                         "accountant": "rdp", "epsilon_budget": 10.0}},
                     data_fingerprints={"anchor": "sha256:feed"})
    return save(path, model, vocab, card, consortium_signing_key(pki))
