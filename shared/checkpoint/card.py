"""The model card: what a checkpoint is, how it was trained and what privacy it cost.

This is the one definition of ``model_card.json``. Every checkpoint carries
one; researchers read it to check provenance and the privacy budget before
using a model (`fedehr model verify`). Fields:

    format, version     "fedehr-model-card", 1
    architecture        ModelConfig.to_dict(): enough to rebuild the model
    vocab_file          "vocab.json"
    vocab_hash          Vocabulary.hash (SHA-256 of its canonical JSON)
    files               {"model.safetensors": sha256, "vocab.json": sha256}
    training            free-form summary (steps, examples, tokens, losses, ...)
    privacy             {site: {"epsilon", "delta", "accountant", "history", ...}}:
                        "history" is the site ledger's every charge as
                        [noise_multiplier, sample_rate, steps] (vocabulary
                        releases and DP-SGD rounds alike), so a reader recomputes
                        epsilon at delta (`fedehr audit privacy`); a site
                        trained without DP (the public anchor) is simply absent
    data_fingerprints   {dataset name: fingerprint}
    rounds              federated rounds completed (0 for local training)
    created_at          ISO 8601, UTC
    software_version    fedehr version that wrote it
    notes               free text

`save` fills vocab_hash and files; the rest is the caller's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from fedehr.shared import __version__
from fedehr.shared.errors import FedEHRError

FORMAT = "fedehr-model-card"
VERSION = 1
PRIVACY_KEYS = ("epsilon", "delta", "accountant")


class CheckpointError(FedEHRError):
    """A checkpoint is incomplete, altered, or signed by an untrusted key."""

    exit_code = 4


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ModelCard:
    architecture: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    created_at: str = field(default_factory=_now)
    software_version: str = __version__
    notes: str = ""
    vocab_file: str = "vocab.json"
    vocab_hash: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for site, spent in self.privacy.items():
            missing = [k for k in PRIVACY_KEYS if k not in spent]
            if missing:
                raise CheckpointError(f"privacy of site {site!r} lacks {missing}",
                                      where="model card",
                                      fix="record epsilon, delta and accountant per site "
                                      "(PrivacyLedger.summary())")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    def to_json(self) -> bytes:
        """Deterministic bytes (sorted keys): the file that is hashed and signed."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)
                + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model card") -> ModelCard:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise CheckpointError("not a fedehr model card of a supported version", where=where,
                                  fix="use a checkpoint written by a compatible fedehr")
        known = {f.name for f in fields(cls)}
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        unknown = sorted(set(body) - known)
        if unknown or "architecture" not in body:
            raise CheckpointError(f"unexpected model card keys {unknown} or no architecture",
                                  where=where, fix="use a checkpoint written by fedehr")
        problem = card_type_problem(body)
        if problem:  # a checkpoint is another party's file: nothing is used unchecked
            raise CheckpointError(f"model card field {problem}", where=where,
                                  fix="use a checkpoint written by fedehr; do not use this one")
        return cls(**body)

    @classmethod
    def from_json(cls, raw: bytes, where: str = "model card") -> ModelCard:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"the model card is not valid JSON ({exc})", where=where,
                                  fix="pull the checkpoint again") from exc
        if not isinstance(data, dict):
            raise CheckpointError("the model card is not a JSON object", where=where,
                                  fix="pull the checkpoint again")
        return cls.from_dict(data, where=where)


# -- the card's schema: a card comes from another party, so every field is type-checked ----

def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items())


def _charge(value: Any) -> bool:
    """One ledger charge: [noise_multiplier, sample_rate, steps]."""
    return isinstance(value, list) and len(value) == 3 and _number(value[0]) \
        and value[0] > 0 and _number(value[1]) and 0 < value[1] <= 1 and _count(value[2])


def _privacy_problem(site: Any, spent: Any) -> str | None:
    if not isinstance(site, str) or not isinstance(spent, dict):
        return f"'privacy.{site}' must map a site name to an object"
    where = f"'privacy.{site}"
    if not _number(spent.get("epsilon", 0)) or spent.get("epsilon", 0) < 0:
        return f"{where}.epsilon' must be a number >= 0"
    if not _number(spent.get("delta", 0)) or not 0 <= spent.get("delta", 0) < 1:
        return f"{where}.delta' must be a number in [0, 1)"
    if not isinstance(spent.get("accountant", ""), str):
        return f"{where}.accountant' must be text"
    if "epsilon_budget" in spent and not _number(spent["epsilon_budget"]):
        return f"{where}.epsilon_budget' must be a number"
    history = spent.get("history", [])
    if not isinstance(history, list) or not all(_charge(c) for c in history):
        return (f"{where}.history' must be a list of [noise_multiplier > 0, "
                "sample_rate in (0, 1], steps >= 0]")
    return None


def _history_problem(history: Any) -> str | None:
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        return "'training.history' must be a list of objects"
    for entry in history:
        participants = entry.get("participants", [])
        if not isinstance(participants, list) or not all(isinstance(p, str)
                                                         for p in participants):
            return "'training.history[].participants' must be a list of site names"
    return None


def card_type_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with the types of a card's fields ("'rounds' must be ..."), or None."""
    checks = {
        "architecture": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
                         "an object"),
        "training": (lambda v: isinstance(v, dict), "an object"),
        "privacy": (lambda v: isinstance(v, dict), "an object of sites"),
        "data_fingerprints": (_str_map, "an object of text values"),
        "rounds": (_count, "a whole number >= 0"),
        "files": (_str_map, "an object of file name -> SHA-256"),
        **{name: (lambda v: isinstance(v, str), "text")
           for name in ("created_at", "software_version", "notes", "vocab_file", "vocab_hash")},
    }
    for name, (ok, what) in checks.items():
        if name in body and not ok(body[name]):
            return f"'{name}' must be {what}, not {type(body[name]).__name__}"
    for site, spent in body.get("privacy", {}).items():
        problem = _privacy_problem(site, spent)
        if problem:
            return problem
    if "history" in body.get("training", {}):
        return _history_problem(body["training"]["history"])
    return None
