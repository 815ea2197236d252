"""The Model page's content: the card in readable form and the checkpoint verified
afresh on every visit (files can change after the server started).

Verification is `fedehr.shared.checkpoint.verify`; the per-file rows recompute
each hash against the card so the page names the file that changed. The
privacy and loss rows read the card as `fedehr model card` does
(registry/card_view.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fedehr.shared.checkpoint import ModelCard
from fedehr.shared.checkpoint.format import CARD, SIGNATURE, SIGNER
from fedehr.shared.checkpoint.signing import sha256_file
from fedehr.shared.errors import FedEHRError
from fedehr.shared.registry.card_view import _mean, _num


@dataclass
class ModelView:
    path: Path
    verified: bool
    reason: str  # why it failed, or what a pass proves
    card: ModelCard | None = None
    files: list[tuple[str, bool, str, str]] = field(default_factory=list)  # name, ok, check, detail
    privacy: list[dict] = field(default_factory=list)
    losses: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    facts: list[tuple[str, str]] = field(default_factory=list)


def model_view(path: Path, trusted_key: Path | None) -> ModelView:
    from fedehr.shared.checkpoint import verify

    path = Path(path)
    try:
        card = verify(path, trusted_public_key=trusted_key)
        reason = ("signature verified against the trusted consortium key" if trusted_key else
                  "hashes and signature match; checked against the checkpoint's own signer.pub "
                  "(integrity, not who signed: start with --trusted-key for that)")
        view = ModelView(path, True, reason, card)
    except FedEHRError as exc:
        view = ModelView(path, False, exc.message, _card_anyway(path))
    view.files = _file_rows(path, view.card)
    if view.card is not None:
        _read_card(view, view.card)
    return view


def _card_anyway(path: Path) -> ModelCard | None:
    """The card as written, to show beside a red verdict (never trusted for use)."""
    try:
        return ModelCard.from_dict(json.loads((path / CARD).read_text()), where=str(path))
    except (OSError, ValueError, FedEHRError):
        return None


def _file_rows(path: Path, card: ModelCard | None) -> list[tuple[str, bool, str, str]]:
    """Each signed file against the card's hash; the signature files only for presence
    (whether the signature holds is the verdict above)."""
    rows = []
    for name, expected in sorted((card.files if card else {}).items()):
        if not (path / name).is_file():
            rows.append((name, False, "missing", ""))
            continue
        actual = sha256_file(path / name)
        same = actual == expected
        rows.append((name, same, "hash matches the card" if same else "hash differs",
                     f"sha256 {actual[:16]}..." + ("" if same else
                                                   f" (the card says {expected[:16]}...)")))
    for name in (SIGNATURE, SIGNER):
        here = (path / name).is_file()
        rows.append((name, here, "present" if here else "missing", ""))
    return rows


def _read_card(view: ModelView, card: ModelCard) -> None:
    training = card.training or {}
    history = [h for h in training.get("history", []) if isinstance(h, dict)]
    joined: dict[str, int] = {}
    for entry in history:
        for site in entry.get("participants", []):
            joined[site] = joined.get(site, 0) + 1
    arch = card.architecture
    view.facts = [("rounds", str(card.rounds)),
                  ("created", f"{card.created_at} (fedehr {card.software_version})"),
                  ("trained by", str(training.get("federation", "not recorded"))),
                  ("strategy", str(training.get("strategy", "not recorded"))),
                  ("hospitals", ", ".join(sorted(set(joined) | set(card.privacy))) or "none"),
                  ("architecture", ", ".join(f"{k}={arch[k]}" for k in
                                             ("vocab_size", "d_model", "n_layers", "n_heads",
                                              "max_len") if k in arch) or "(custom)"),
                  ("audit head", str(training.get("audit_head", "not recorded")))]
    view.privacy = [{"site": site + (" (trial ledger)" if spent.get("trial") else ""),
                     "epsilon": _num(spent.get("epsilon")),
                     "delta": _num(spent.get("delta"), "g"),
                     "budget": _num(spent.get("epsilon_budget")),
                     "accountant": str(spent.get("accountant", "")),
                     "rounds": str(joined.get(site, "-"))}
                    for site, spent in sorted(card.privacy.items())]
    for key, name in (("anchor_loss", "anchor loss"), ("site_eval_loss", "site eval loss")):
        points = [(float(e["round"]), _mean(e.get(key))) for e in history
                  if isinstance(e.get("round"), int | float)]
        points = [(r, v) for r, v in points if v is not None]
        if points:
            view.losses[name] = points
