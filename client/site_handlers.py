"""What a hospital does with each message from the consortium.

Three handlers, free of Flower types so the ClientApp and tests can call
them alike:

- `release_counts` / `release_values`: the vocabulary round; DP-noised,
  contribution-bounded, thresholded code counts and value sketches, charged
  to the site's privacy ledger.
- `train_round`: DP-SGD on the site's patients from the global weights, with
  noise chosen so the run's share of the budget (``privacy.epsilon_per_run``)
  lasts the rounds the server says are left (never below site.yaml's minimum,
  never past the run's share or the lifetime budget).
- `evaluate_round`: the global model's loss on the site's held-out patients,
  sent only if site.yaml declares losses public (``privacy.release_metrics``).

What leaves the site besides the DP-SGD update and the charged releases is
decided by site.yaml, safe by default: no loss and no patient count (FedAvg
then weighs every site 1). The noise of every release is keyed by 256 bits
(`fedehr.client.privacy.noise`), fresh from `secrets` or derived from the
site's secret seed file.

Every release is first charged, then stored under the site's state folder by
round id, then sent. A round asked for again (a resumed server, a lost
reply) gets the stored reply: the same release, at no new privacy cost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedehr.client import activity
from fedehr.client.config import SiteConfig
from fedehr.client.limits import train_request
from fedehr.client.privacy import PrivacyLedger
from fedehr.client.privacy.budget import (
    announcement,
    check_run_release,
    has_trained,
    noise_for_rounds_left,
    run_of,
    run_target,
    trial_tag,
)
from fedehr.client.privacy.count_release import release_code_counts, release_value_histograms
from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
from fedehr.client.privacy.metric_release import noised_mean_loss
from fedehr.client.privacy.noise import derived_key, fresh_key, numpy_generator
from fedehr.client.site_data import site_mapping
from fedehr.client.warm_state import anchor_windows, site_data
from fedehr.shared import messages as M
from fedehr.shared.atomic import write_bytes, write_text
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import FedEHRError
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from fedehr.shared.training import evaluate
from fedehr.shared.training.trainer import per_example_losses

log = logging.getLogger("fedehr.site")


class SiteRefusal(FedEHRError):
    """The site declines a request; the reason goes back to the server."""


def open_ledger(site: SiteConfig) -> PrivacyLedger:
    """The site's ledger (the trial one with ``privacy.trial``), checked against the
    site's activity log: a missing ledger at a site that has released before, or a
    ledger that accounts for less than the log says was released, is refused."""
    p = site.privacy
    events = activity.read(site.state_dir)
    if not site.ledger_path.exists() and not p.new_ledger:
        released = charging_events(site, events)
        if released:
            raise SiteRefusal(
                f"{trial_tag(p.trial)}the privacy ledger is missing but this site has released "
                f"{len(released)} times (activity log); a fresh ledger would forget that "
                "privacy spent", where=str(site.ledger_path),
                fix="restore the ledger from backup, or, knowing what was spent, set "
                "privacy.new_ledger: true in site.yaml to start a new one")
    ledger = PrivacyLedger.open(site.ledger_path, epsilon_budget=p.epsilon, delta=p.delta,
                                accountant=p.accountant, activity_offset=len(events))
    check_against_activity(site, ledger, events)
    return ledger


def read_ledger(site: SiteConfig) -> PrivacyLedger | None:
    """The ledger as it is on disk (None if absent); writes nothing (read-only commands)."""
    return PrivacyLedger.read(site.ledger_path)


def charging_events(site: SiteConfig, events: list[dict]) -> list[dict]:
    """The activity log's releases that were charged to this site's ledger (real or trial)."""
    kind = ledger_kind(site)
    return [e for e in events if e.get("ledger", "real") == kind and (
        e.get("kind") in ("train", "release")
        or (e.get("kind") == "evaluate" and e.get("released") == "noised"))]


def ledger_kind(site: SiteConfig) -> str:
    return "trial" if site.privacy.trial else "real"


def check_against_activity(site: SiteConfig, ledger: PrivacyLedger, events: list[dict]) -> None:
    """Refuse a ledger that accounts for less than the site's own activity log says it
    released (entries removed, a ledger from an older backup, a stored total edited)."""
    logged = charging_events(site, events[ledger.activity_offset:])
    claimed = max((float(e["epsilon"]) for e in logged if "epsilon" in e), default=0.0)
    spent = ledger.spent()
    if len(logged) > len(ledger.entries) or claimed > spent * (1 + 1e-6) + 1e-9:
        raise SiteRefusal(
            f"{trial_tag(site.privacy.trial)}the privacy ledger does not match the site's "
            f"activity log: the log records {len(logged)} charged releases reaching epsilon "
            f"{claimed:.3f}, the ledger holds {len(ledger.entries)} charges worth epsilon "
            f"{spent:.3f}", where=str(site.ledger_path),
            fix="restore the ledger from backup (state_dir/audit.jsonl, checked by `fedehr "
            "audit verify`, lists every release); never edit or trim it")


def check_can_join(site: SiteConfig, ledger: PrivacyLedger) -> None:
    """A site whose budget in site.yaml is below what it already spent does not join."""
    if ledger.spent() > site.privacy.epsilon:
        raise SiteRefusal(
            f"{trial_tag(site.privacy.trial)}privacy.epsilon is {site.privacy.epsilon:g} but "
            f"this site has already spent epsilon {ledger.spent():.3f}; it refuses to join",
            where=str(site.ledger_path), fix="nothing more may be released from these "
            "patients; put the budget back only if the consortium's agreement allows it")


def _record(site: SiteConfig, kind: str, **fields) -> None:
    """An activity line, tagged with the ledger it was charged to when that is the trial."""
    if site.privacy.trial:
        fields["ledger"] = "trial"
    activity.record(site.state_dir, kind, **fields)


# -- stored replies ----------------------------------------------------------------


def _reply_path(site: SiteConfig, round_id: str, suffix: str) -> Path:
    digest = hashlib.sha256(round_id.encode()).hexdigest()[:24]
    return site.replies_dir / f"{digest}{suffix}"


def _stored_json(site: SiteConfig, round_id: str) -> dict | None:
    path = _reply_path(site, round_id, ".json")
    return json.loads(path.read_text()) if path.exists() else None


def noise_seed(site: SiteConfig, release_key: str) -> int:
    """The 256-bit secret key of a release's DP noise and sampling: fresh from `secrets`,
    or derived from the site's own secret seed file (privacy.noise_seed_file, kept
    for reproducibility checks) with HMAC-SHA256, full width."""
    path = site.privacy.noise_seed_file
    return fresh_key() if path is None else derived_key(path, release_key)


# -- vocabulary round ------------------------------------------------------------


def _site_events(site: SiteConfig):
    dataset = MEDSDataset.open(site.data)
    events = dataset.scan(S.TRAIN).collect()
    return site_mapping(site, dataset).apply(events)


def release_counts(site: SiteConfig, config: dict) -> dict:
    """Bounded, noised, thresholded patient counts per standard code (public candidates)."""
    p = site.privacy
    candidates = json.loads(config[M.CANDIDATES]) if config.get(M.CANDIDATES) else None
    if candidates is None:
        raise SiteRefusal(
            "open-domain count release refused: without a public candidate list the set "
            "of released codes itself leaks (its partition-selection delta is not charged)",
            where=site.name, fix="the server sends the public candidate codes "
            "(vocabulary.candidates in federation.yaml, or the anchor's codes)")
    return _release(site, config, lambda events: release_code_counts(
        events, k=p.vocab_max_codes_per_patient, noise_multiplier=p.vocab_noise_multiplier,
        threshold=p.vocab_threshold, rng=_rng(site, config), candidates=candidates))


def release_values(site: SiteConfig, config: dict) -> dict:
    """Noised value histograms on the public grid for the codes the anchor lacks."""
    p = site.privacy
    return _release(site, config, lambda events: release_value_histograms(
        events, codes=json.loads(config[M.SKETCH_CODES]),
        grid=np.asarray(json.loads(config[M.VALUE_GRID])), k=p.vocab_max_codes_per_patient,
        noise_multiplier=p.vocab_noise_multiplier, rng=_rng(site, config)))


def _rng(site: SiteConfig, config: dict) -> np.random.Generator:
    return numpy_generator(noise_seed(site, str(config[M.ROUND_ID])), "counts")


def _release(site: SiteConfig, config: dict, make) -> dict:
    """Check the budget, make the release from the site's mapped events, charge, store."""
    round_id = str(config[M.ROUND_ID])
    if (stored := _stored_json(site, round_id)) is not None:
        return stored
    ledger = open_ledger(site)
    check_run_release(ledger, run_of(round_id), site.privacy.run_budget,
                      site.privacy.vocab_noise_multiplier, 1.0, 1)  # before the data
    release = make(_site_events(site))
    return _charge_and_store(site, ledger, round_id, release.charge, release.to_dict())


def _charge_and_store(site, ledger, round_id, charge, payload: dict) -> dict:
    ledger.charge(charge.noise_multiplier, charge.sample_rate, charge.steps,
                  purpose="vocab-release", round_id=round_id)
    write_text(_reply_path(site, round_id, ".json"), json.dumps(payload))
    _record(site, "release", round_id=round_id, epsilon=ledger.spent(),
            epsilon_budget=ledger.epsilon_budget)
    log.info("%ssite %s: released %s (epsilon now %.3f of %.3f)", trial_tag(site.privacy.trial),
             site.name, round_id, ledger.spent(), ledger.epsilon_budget)
    return payload


# -- training and evaluation ---------------------------------------------------------


@dataclass
class RoundSetup:
    vocab: Vocabulary
    model: EHRModel


def _setup(site: SiteConfig, arrays: dict[str, torch.Tensor], config: dict) -> RoundSetup:
    vocab_json = str(config[M.VOCAB_JSON])
    path = site.state_dir / "vocab" / f"{config[M.VOCAB_HASH]}.json"
    if not path.exists():
        write_text(path, vocab_json)
    vocab = Vocabulary.from_json(path)
    if vocab.hash != config[M.VOCAB_HASH]:
        raise SiteRefusal(f"the vocabulary does not match its hash {config[M.VOCAB_HASH]}",
                          where=site.name, fix="the server must resend the vocabulary")
    model = EHRModel(ModelConfig.from_dict(json.loads(config[M.MODEL_CONFIG])))
    model.load_state_dict(arrays, strict=True)
    return RoundSetup(vocab=vocab, model=model)


def train_round(site: SiteConfig, arrays: dict[str, torch.Tensor], config: dict
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    round_id = str(config[M.ROUND_ID])
    key = f"{round_id}:{_arrays_digest(arrays)}"  # same round, same start: same release
    if (stored := _stored_json(site, key)) is not None:
        from safetensors.torch import load_file

        log.info("site %s: resending the stored update of %s", site.name, round_id)
        return load_file(str(_reply_path(site, key, ".safetensors"))), stored
    torch.set_num_threads(site.training.threads)
    setup = _setup(site, arrays, config)
    request = train_request(site, config)
    cfg = setup.model.config
    data = site_data(site, setup.vocab, max_len=cfg.max_len, note_dim=cfg.note_dim,
                     image_dim=cfg.image_dim)
    ledger = open_ledger(site)
    run, p = run_of(round_id), site.privacy
    if not has_trained(ledger, run):
        log.info("site %s: %s", site.name, announcement(ledger, run, p.run_budget,
                                                        trial=p.trial))
    batch_size = min(request.batch_size, data.patients)
    sample_rate = batch_size / data.patients
    planned = request.steps * request.rounds_left  # spread the run's share over what is left
    noise = noise_for_rounds_left(ledger, sample_rate=sample_rate, steps_planned=planned,
                                  min_noise=p.min_noise_multiplier,
                                  target_epsilon=run_target(ledger, run, p.run_budget))
    check_run_release(ledger, run, p.run_budget, noise, sample_rate, request.steps)
    dp = DPConfig(max_grad_norm=site.privacy.max_grad_norm, noise_multiplier=noise)
    public = anchor_windows(site, setup.vocab, fingerprint=request.anchor_fingerprint,
                            max_len=cfg.max_len, note_dim=cfg.note_dim,
                            image_dim=cfg.image_dim) if request.anchor_per_step else None
    result = train_dp(setup.model, data.train, steps=request.steps, batch_size=batch_size,
                      lr=request.lr, dp=dp, ledger=ledger, round_id=key,
                      proximal_mu=request.proximal_mu, seed=noise_seed(site, key),
                      device=_device(site), processes=site.training.processes,
                      frozen_rows=_checked_rows(request.frozen_rows, cfg.vocab_size),
                      public=public, public_per_step=request.anchor_per_step)
    state = {k: v.detach().cpu().contiguous() for k, v in setup.model.state_dict().items()}
    metrics = {
        **released_metrics(site, patients=data.patients, loss=result.mean_loss,
                           loss_key=M.TRAIN_LOSS),
        M.EPSILON: float(ledger.spent()),
        M.EPSILON_BUDGET: float(site.privacy.epsilon),
        M.DELTA: float(site.privacy.delta),
        M.NOISE_MULTIPLIER: float(noise),
        M.STEPS: float(result.steps),
        M.ACCOUNTANT: float(M.ACCOUNTANTS.index(ledger.accountant)),
        M.LEDGER_HISTORY: [float(v) for charge in ledger.history for v in charge],
        M.EPSILON_PER_RUN: float(p.run_budget),  # `fedehr run start` previews with it
        M.TRIAL_LEDGER: float(p.trial),  # the model card marks a sandbox ledger
    }
    if site.privacy.release_metrics == "public":  # the time depends on the batch sizes
        metrics[M.TRAIN_SECONDS] = float(result.seconds)
    _store_update(site, key, state, metrics)
    _record(site, "train", round_id=round_id, steps=result.steps, examples=result.examples,
            seconds=result.seconds, patients=data.patients, epsilon=ledger.spent(),
            epsilon_budget=site.privacy.epsilon, noise_multiplier=noise, notes=request.notes)
    log.info("%ssite %s: trained %s: %d steps, loss %.3f, noise %.3f, epsilon %.3f of %.3f",
             trial_tag(p.trial), site.name, round_id, result.steps, result.mean_loss, noise,
             ledger.spent(), site.privacy.epsilon)
    return state, metrics


def _checked_rows(rows: tuple[int, ...], vocab_size: int) -> tuple[int, ...]:
    if any(r >= vocab_size for r in rows):
        raise SiteRefusal(f"the server asks to keep token rows beyond the vocabulary's "
                          f"{vocab_size} tokens", where="round config",
                          fix="the server must send rows of the vocabulary it sent")
    return rows


def evaluate_round(site: SiteConfig, arrays: dict[str, torch.Tensor], config: dict
                   ) -> dict[str, float]:
    p = site.privacy
    if p.release_metrics == "none":  # nothing to send: touch no patient
        activity.record(site.state_dir, "evaluate", round_id=str(config.get(M.ROUND_ID)),
                        released=False)
        return released_metrics(site, patients=0, loss=float("nan"), loss_key=M.EVAL_LOSS)
    if p.release_metrics == "noised":
        return _noised_evaluation(site, arrays, config)
    torch.set_num_threads(site.training.threads)
    setup = _setup(site, arrays, config)
    cfg = setup.model.config
    data = site_data(site, setup.vocab, max_len=cfg.max_len, note_dim=cfg.note_dim,
                     image_dim=cfg.image_dim)
    loss, _ = evaluate(setup.model, data.held_out, batch_size=64, device=_device(site))
    activity.record(site.state_dir, "evaluate", round_id=str(config.get(M.ROUND_ID)),
                    patients=len(data.held_out), loss=loss)
    return released_metrics(site, patients=len(data.held_out), loss=loss,
                            loss_key=M.EVAL_LOSS)


def _noised_evaluation(site: SiteConfig, arrays: dict[str, torch.Tensor], config: dict
                       ) -> dict[str, float]:
    """The held-out loss clipped, noised and charged; the same request gets the stored
    reply (same weights, same round: same release, no new cost)."""
    p = site.privacy
    key = f"{config.get(M.ROUND_ID)}:eval:{_arrays_digest(arrays)}"
    if (stored := _stored_json(site, key)) is not None:
        return stored
    ledger = open_ledger(site)
    check_run_release(ledger, run_of(str(config.get(M.ROUND_ID))), p.run_budget,
                      p.metric_noise_multiplier, 1.0, 1)  # before the data
    torch.set_num_threads(site.training.threads)
    setup = _setup(site, arrays, config)
    cfg = setup.model.config
    data = site_data(site, setup.vocab, max_len=cfg.max_len, note_dim=cfg.note_dim,
                     image_dim=cfg.image_dim)
    losses = per_example_losses(setup.model, data.held_out, batch_size=64,
                                device=_device(site))
    release = noised_mean_loss(losses.numpy(), bound=p.metric_loss_bound,
                               noise_multiplier=p.metric_noise_multiplier,
                               rng=numpy_generator(noise_seed(site, key), "metrics"))
    ledger.charge(release.charge.noise_multiplier, release.charge.sample_rate,
                  release.charge.steps, purpose="metric-release", round_id=key)
    payload = {**released_metrics(site, patients=len(data.held_out), loss=float("nan"),
                                  loss_key=M.EVAL_LOSS), M.EVAL_LOSS: release.mean}
    write_text(_reply_path(site, key, ".json"), json.dumps(payload))
    _record(site, "evaluate", round_id=str(config.get(M.ROUND_ID)), released="noised",
            epsilon=ledger.spent())
    return payload


def released_metrics(site: SiteConfig, *, patients: int, loss: float, loss_key: str
                     ) -> dict[str, float]:
    """The patient-derived numbers a reply may carry, as site.yaml allows.

    The patient count goes out only when ``privacy.public_counts`` is true;
    otherwise the FedAvg weight is 1 (every site counts the same). The exact
    loss goes out only when ``privacy.release_metrics`` is "public" (a noised
    held-out loss, "noised", is made by `_noised_evaluation`).
    """
    p = site.privacy
    out = {M.NUM_EXAMPLES: float(patients) if p.public_counts else 1.0,
           M.COUNTS_PUBLIC: float(p.public_counts)}
    if p.release_metrics == "public":
        out[loss_key] = float(loss)
    return out


def _device(site: SiteConfig) -> torch.device:
    from fedehr.shared.training.device import resolve_device

    return resolve_device(site.training.device, where=f"{site.name} site.yaml training.device")


def _store_update(site: SiteConfig, key: str, state: dict[str, torch.Tensor],
                  metrics: dict[str, float]) -> None:
    from safetensors.torch import save

    write_bytes(_reply_path(site, key, ".safetensors"), save(state))
    write_text(_reply_path(site, key, ".json"), json.dumps(metrics))


def _arrays_digest(arrays: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(arrays[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

