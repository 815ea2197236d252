"""What the server asks for, checked against what the site allows.

Privacy parameters (budget, delta, accountant, clipping, minimum noise) come
from site.yaml only: a server that sends any of them is ignored on that point
and the site says so in its log. Local steps, batch size and learning rate
are clamped to the site's limits.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from fedehr.client.config import SiteConfig
from fedehr.shared import messages as M
from fedehr.shared.errors import FedEHRError

log = logging.getLogger("fedehr.site")

# Keys a server might send to loosen privacy; a site never takes them from outside.
PRIVACY_KEYS = ("epsilon", "target-epsilon", "delta", "noise-multiplier", "max-grad-norm",
                "budget", "accountant", "clip", "dp")
# ...and any spelling of them (min_noise_multiplier, clipping-norm, sigma, dp-epsilon, ...).
# SecAgg+'s clipping range is about quantising updates, not DP: not a privacy key.
PRIVACY_PATTERN = re.compile(r"noise|epsilon|delta|clip|grad.?norm|budget|accountant|sigma|"
                             r"^dp([-_]|$)", re.IGNORECASE)


def privacy_keys_sent(config: dict) -> list[str]:
    return [k for k in config if k in PRIVACY_KEYS or
            (PRIVACY_PATTERN.search(k) and not k.startswith("secagg-"))]


@dataclass(frozen=True)
class TrainRequest:
    steps: int
    batch_size: int
    lr: float
    proximal_mu: float
    rounds_left: int
    notes: list[str]  # what was clamped or ignored, for the log and the reply
    frozen_rows: tuple[int, ...] = ()  # token ids whose embedding/output rows stay as sent
    anchor_per_step: int = 0  # public anchor windows in every DP-SGD batch
    anchor_fingerprint: str = ""  # the server's anchor, which the site's copy must match


def public_windows(config: dict, upper: int, notes: list[str]) -> int:
    """Public anchor windows per DP-SGD step (0: none); they cost compute, not privacy,
    so the site's batch-size limit bounds them too."""
    asked = max(0, int(config.get(M.ANCHOR_PER_STEP, 0)))
    if asked > upper:
        notes.append(f"clamped {M.ANCHOR_PER_STEP} from {asked} to the site limit {upper}")
    return min(asked, upper)


def frozen_rows(config: dict) -> tuple[int, ...]:
    """The token ids the server asks to keep (json list of ints); a malformed list is
    the server's error, refused rather than guessed."""
    if M.FROZEN_ROWS not in config:
        return ()
    try:
        rows = json.loads(str(config[M.FROZEN_ROWS]))
        if not isinstance(rows, list) or not all(isinstance(r, int) and r >= 0 for r in rows):
            raise ValueError("not a list of token ids")
    except ValueError as exc:
        raise FedEHRError(f"{M.FROZEN_ROWS} from the server is not a list of token ids "
                          f"({exc})", where="round config",
                          fix="update the server; it must send a JSON list of integers") from exc
    return tuple(rows)


def train_request(site: SiteConfig, config: dict) -> TrainRequest:
    notes = [f"ignored '{k}' sent by the server: privacy parameters come from site.yaml"
             for k in privacy_keys_sent(config)]
    limits = site.training

    def clamp(key: str, value, upper, kind):
        asked = kind(config.get(key, value))
        if asked > upper:
            notes.append(f"clamped {key} from {asked} to the site limit {upper}")
            return kind(upper)
        if asked <= 0:
            notes.append(f"{key}={asked} is not positive; used {value}")
            return kind(value)
        return asked

    request = TrainRequest(
        steps=clamp(M.LOCAL_STEPS, 10, limits.max_local_steps, int),
        batch_size=clamp(M.BATCH_SIZE, 32, limits.max_batch_size, int),
        lr=clamp(M.LEARNING_RATE, 1e-3, limits.max_learning_rate, float),
        proximal_mu=max(0.0, float(config.get(M.PROXIMAL_MU, 0.0))),
        rounds_left=max(1, int(config.get(M.ROUNDS_LEFT, 1))),
        notes=notes,
        frozen_rows=frozen_rows(config),
        anchor_per_step=public_windows(config, limits.max_batch_size, notes),
        anchor_fingerprint=str(config.get(M.ANCHOR_FINGERPRINT, "")),
    )
    for note in notes:
        log.warning("site %s: %s", site.name, note)
    return request
