"""The consortium's checkpoint store: a signed checkpoint per round and the resume state.

Layout under the federation's workdir:

    checkpoints/round-0003/     signed checkpoint (fedehr.shared.checkpoint)
    checkpoints/latest          name of the newest complete round folder
    state/round-0003.safetensors  strategy state (e.g. FedAdam's moments)
    state/resume.json           last finished round, vocabulary, history

Everything is written atomically and `resume.json` last, so a server killed
at any moment resumes from the last round that is complete on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedehr.shared.atomic import write_bytes, write_text
from fedehr.shared.checkpoint import ModelCard, save
from fedehr.shared.errors import FedEHRError


@dataclass
class ResumeState:
    round: int  # last finished round (0 = warm start only)
    vocab_file: str
    model_config: dict
    history: list[dict] = field(default_factory=list)  # one entry per finished round
    privacy: dict[str, dict] = field(default_factory=dict)  # site -> latest epsilon report
    anchor_only_rows: list[int] = field(default_factory=list)  # vocab_round.anchor_only


class CheckpointStore:
    def __init__(self, root: Path, signing_key):
        self.root = Path(root)
        self.signing_key = signing_key
        self.checkpoints = self.root / "checkpoints"
        self.state = self.root / "state"

    def round_dir(self, rnd: int) -> Path:
        return self.checkpoints / f"round-{rnd:04d}"

    def save_round(self, rnd: int, model: torch.nn.Module, vocab, card: ModelCard,
                   strategy_state: dict[str, np.ndarray], resume: ResumeState) -> Path:
        from safetensors.numpy import save as save_arrays

        path = self.round_dir(rnd)
        save(path, model, vocab, card, self.signing_key, overwrite=True)
        write_bytes(self.state / f"round-{rnd:04d}.safetensors",
                    save_arrays(strategy_state) if strategy_state else b"")
        write_text(self.checkpoints / "latest", path.name + "\n")
        write_text(self.state / "resume.json", json.dumps(resume.__dict__, indent=2))
        return path

    def latest(self) -> Path | None:
        marker = self.checkpoints / "latest"
        return self.checkpoints / marker.read_text().strip() if marker.exists() else None

    def resume_state(self) -> ResumeState | None:
        path = self.state / "resume.json"
        if not path.exists():
            return None
        try:
            return ResumeState(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise FedEHRError(f"unreadable resume state ({exc})", where=str(path),
                              fix="start a new federation (new workdir) or restore the file"
                              ) from None

    def strategy_state(self, rnd: int) -> dict[str, np.ndarray]:
        from safetensors.numpy import load

        path = self.state / f"round-{rnd:04d}.safetensors"
        data = path.read_bytes() if path.exists() else b""
        return load(data) if data else {}
