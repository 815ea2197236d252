"""One training loop for every trainer in fedehr: non-private and DP-SGD (Opacus).

Non-private training (the public anchor, baselines) and DP-SGD at a site run
the same loop; `dp=None` selects the former. The model is any `nn.Module`
with ``per_example_loss(batch: Batch) -> Tensor[B]`` (the fedehr EHRModel);
the dataset yields the tuples of `fedehr.shared.tokenizer.batch.FIELDS`.

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") follows
Opacus: `PrivacyEngine.make_private` with

- Poisson sampling: each patient window joins a step's batch with probability
  ``sample_rate = batch_size / len(dataset)`` (Opacus' `DPDataLoader`), so
  batch sizes vary and a batch can be empty. An empty batch skips the forward
  and backward pass but still takes a noise-only optimizer step and counts as a
  step for accounting: what the analysis assumes, and what keeps an empty
  batch from showing in the update.
- per-example clipping at ``max_grad_norm`` and Gaussian noise of std
  ``noise_multiplier * max_grad_norm``; ``loss_reduction="mean"`` everywhere
  (the mean of the per-example losses, divided by the *expected* batch size
  after noising, as Opacus does).
- ``grad_sample_mode="hooks"`` (default, fastest on CPU) or ``"ghost"`` (ghost
  clipping, Li et al. 2022 / Bu et al. 2023: the same clipped gradients without
  materialising per-example gradients, so less memory; pays for wide layers or
  long sequences on GPU).
- ``wrap_model=False``: Opacus attaches hooks to the model itself instead of
  wrapping it, so its state_dict never gains a ``_module.`` prefix; the hooks
  are removed when training ends, leaving a plain module to exchange.

Accounting: the site's ledger (`fedehr.client.privacy.PrivacyLedger`) is the
accountant of record. Before anything trains, the ledger checks that the run's steps fit the budget
(BudgetExceededError otherwise, and the model is untouched); after training it
is charged with the steps actually taken (also when training fails midway:
every step that touched data is on the books). The PrivacyEngine is built
fresh per call, but its accountant is loaded with the ledger's history, so
``engine.accountant`` reports the same cumulative epsilon as the ledger (the
trainer cross-checks the two). Noise is either given or solved for a target
*cumulative* epsilon over this run's steps (`Ledger.noise_for_budget`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedehr.shared.errors import ConfigError, DataError
from fedehr.shared.privacy.accounting import (
    ACCOUNTANTS,
    History,
    epsilon_of,
    noise_multiplier_for,
)
from fedehr.shared.tokenizer.batch import PAD_ID, Batch


class Ledger(Protocol):
    """What the trainer needs of a site's privacy ledger (`fedehr.client.privacy`)."""

    path: Path
    delta: float
    accountant: str
    history: History

    def has_round(self, round_id: str) -> bool: ...
    def noise_for_budget(self, sample_rate: float, steps: int, *,
                         target_epsilon: float | None = None) -> float: ...
    def check(self, noise_multiplier: float, sample_rate: float, steps: int) -> float: ...
    def charge(self, noise_multiplier: float, sample_rate: float, steps: int, *, purpose: str,
               round_id: str | None = None, enforce: bool = True) -> object: ...
    def spent(self) -> float: ...


GRAD_SAMPLE_MODES = ("hooks", "ghost")

# progress(step, steps, loss): called after every optimizer step
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD parameters: all explicit, none hidden.

    Give exactly one of `noise_multiplier` or `target_epsilon`. With a ledger,
    `target_epsilon` is the site's cumulative epsilon after this run (it may not
    exceed the ledger's budget) and `delta`/`accountant` must match the ledger
    (None means: take the ledger's). Without a ledger, `delta` is required when
    a target is given, and the target covers this run alone.
    """

    max_grad_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str | None = None  # "rdp" or "prv"; None = the ledger's, else "rdp"
    grad_sample_mode: str = "hooks"  # or "ghost"
    secure_mode: bool = False  # cryptographically secure noise (needs torchcsprng)

    def __post_init__(self) -> None:
        where = "DP config"
        if not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}",
                              where=where, fix="use e.g. max_grad_norm=1.0")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("give exactly one of noise_multiplier and target_epsilon",
                              where=where, fix="e.g. target_epsilon=8 (with delta) or "
                              "noise_multiplier=1.0")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(f"noise_multiplier must be > 0, got {self.noise_multiplier}",
                              where=where, fix="use a positive noise multiplier")
        if self.accountant is not None and self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"unknown accountant {self.accountant!r}", where=where,
                              fix=f"use one of {', '.join(ACCOUNTANTS)}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ConfigError(f"unknown grad_sample_mode {self.grad_sample_mode!r}",
                              where=where, fix=f"use one of {', '.join(GRAD_SAMPLE_MODES)}")


@dataclass(frozen=True)
class TrainResult:
    steps: int  # optimizer steps taken (empty Poisson batches included)
    examples: int  # examples seen
    tokens: int  # non-pad tokens seen
    seconds: float
    mean_loss: float  # mean training loss over the non-empty steps (nan if none)
    epsilon_spent: float  # cumulative epsilon at the site after this run (0 without DP)
    noise_multiplier: float | None  # None without DP
    epsilon_run: float = 0.0  # epsilon of this run's steps alone
    delta: float | None = None
    accountant: str | None = None
    sample_rate: float | None = None
    empty_steps: int = 0


def train(model: nn.Module, dataset: Dataset, *, steps: int, batch_size: int, lr: float,
          dp: DPConfig | None, ledger: Ledger | None = None,
          round_id: str | None = None, seed: int = 0, progress: Progress | None = None,
          weight_decay: float = 0.0, proximal_mu: float = 0.0,
          num_threads: int | None = None, device: str | torch.device = "cpu") -> TrainResult:
    """Train `model` in place for `steps` optimizer steps (AdamW) and report.

    DP-SGD when `dp` is given, non-private otherwise (then `ledger` must be
    None: private data is never trained on without DP). `proximal_mu` > 0 adds
    FedProx's pull towards the starting weights (Li et al. 2020).
    """
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the training dataset is empty", where="trainer",
                        fix="check the data folder and the tokenizer settings")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1 (got {steps}, {batch_size})",
                          where="trainer", fix="pass positive numbers")
    if dp is None and ledger is not None:
        raise ConfigError("a privacy ledger was given for non-private training",
                          where="trainer", fix="pass a DPConfig to train on private data "
                          "with DP, or no ledger for public data")
    torch.manual_seed(seed)
    model.to(device)
    prox = _Proximal(model, proximal_mu * lr) if proximal_mu > 0 else None
    if dp is None:
        return _train_plain(model, dataset, steps=steps, batch_size=batch_size, lr=lr,
                            seed=seed, progress=progress, weight_decay=weight_decay,
                            device=device, prox=prox)
    return _train_dp(model, dataset, steps=steps, batch_size=batch_size, lr=lr, dp=dp,
                     ledger=ledger, round_id=round_id, seed=seed, progress=progress,
                     weight_decay=weight_decay, device=device, prox=prox)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int, *,
             num_threads: int | None = None,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Mean per-example loss over `dataset` and its perplexity ``exp(loss)``.

    Runs under `torch.no_grad()` in eval mode (so it never disturbs Opacus'
    hooks), and restores the model's previous mode.
    """
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("the evaluation dataset is empty", where="evaluate",
                        fix="check the tuning split of the data")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for parts in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            losses = model.per_example_loss(Batch.from_tuple(parts).to(device))
            total += float(losses.double().sum())
            count += int(losses.shape[0])
    finally:
        model.train(was_training)
    loss = total / count
    return loss, math.exp(min(loss, 700.0))


# -- non-private ---------------------------------------------------------------


def _train_plain(model, dataset, *, steps, batch_size, lr, seed, progress, weight_decay,
                 device, prox) -> TrainResult:
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                        generator=generator, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    tally = _Tally()
    was_training = model.training
    model.train()
    try:
        for step, parts in zip(range(steps), _forever(loader), strict=False):
            batch = Batch.from_tuple(parts).to(device)
            losses = model.per_example_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            losses.mean().backward()
            optimizer.step()
            if prox is not None:
                prox.pull()
            tally.add(batch, losses)
            if progress is not None:
                progress(step + 1, steps, tally.last)
    finally:
        model.train(was_training)
    return TrainResult(steps=tally.steps, examples=tally.examples, tokens=tally.tokens,
                       seconds=tally.seconds(), mean_loss=tally.mean_loss(),
                       epsilon_spent=0.0, noise_multiplier=None)


# -- DP-SGD --------------------------------------------------------------------


def _train_dp(model, dataset, *, steps, batch_size, lr, dp: DPConfig,
              ledger: Ledger | None, round_id, seed, progress, weight_decay,
              device, prox) -> TrainResult:
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
    from opacus.validators.errors import UnsupportedModuleError

    n = len(dataset)
    sample_rate = batch_size / n
    if sample_rate > 1:
        raise ConfigError(f"batch_size {batch_size} is larger than the dataset ({n} examples)",
                          where="trainer", fix=f"use batch_size <= {n}")
    delta, accountant = _privacy_terms(dp, ledger)
    if ledger is not None and round_id is not None and ledger.has_round(round_id):
        raise ConfigError(f"round {round_id!r} is already trained and charged at this site",
                          where=str(ledger.path), fix="send the stored update of that round; "
                          "training it again would be a second release")
    prior = ledger.history if ledger is not None else []
    if dp.noise_multiplier is not None:
        noise = float(dp.noise_multiplier)
    elif ledger is not None:
        noise = ledger.noise_for_budget(sample_rate, steps, target_epsilon=dp.target_epsilon)
    else:
        noise = noise_multiplier_for(dp.target_epsilon, delta=delta, sample_rate=sample_rate,
                                     steps=steps, accountant=accountant)
    if ledger is not None:
        ledger.check(noise, sample_rate, steps)  # before anything trains

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=accountant, secure_mode=dp.secure_mode)
    engine.accountant.load_state_dict({"history": list(prior), "mechanism": accountant})
    sample_gen = torch.Generator().manual_seed(seed)
    noise_gen = None if dp.secure_mode else torch.Generator().manual_seed(seed + 1)
    loader = DPDataLoader(dataset, sample_rate=sample_rate, generator=sample_gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    was_training = model.training
    model.train()
    try:
        hooks, optimizer, *_ = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise,
            max_grad_norm=dp.max_grad_norm, poisson_sampling=False,  # the loader already is
            loss_reduction="mean", grad_sample_mode=dp.grad_sample_mode, wrap_model=False,
            noise_generator=noise_gen)
    except UnsupportedModuleError as exc:
        model.train(was_training)
        raise ConfigError(f"the model cannot be trained with DP-SGD: {exc}", where="trainer",
                          fix="build a DP-ready model (opacus ModuleValidator.fix)") from exc
    # Opacus derives q = 1/len(loader) = 1/floor(n/batch_size); use the exact q instead.
    optimizer.expected_batch_size = sample_rate * n
    optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    ghost = dp.grad_sample_mode == "ghost"
    params = [p for p in model.parameters() if p.requires_grad]

    tally = _Tally()
    with warnings.catch_warnings():
        # the first module (the embedding) gets no input gradient: expected, not news
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        # Opacus logs a warning when the *first* Poisson batch is empty; we handle it
        opacus_loader_log = logging.getLogger("opacus.data_loader")
        level = opacus_loader_log.level
        opacus_loader_log.setLevel(logging.ERROR)
        try:
            for step, parts in zip(range(steps), _forever(loader), strict=False):
                batch = Batch.from_tuple(parts).to(device)
                optimizer.zero_grad(set_to_none=True)
                if batch.tokens.shape[0] == 0:  # an empty Poisson batch: noise-only step
                    for p in params:
                        if ghost:
                            p.grad = torch.zeros_like(p)
                        else:
                            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype,
                                                        device=p.device)
                    optimizer.step()
                    tally.add_empty()
                else:
                    losses = model.per_example_loss(batch)
                    if ghost:
                        DPTensorFastGradientClipping(hooks, optimizer, losses, "mean").backward()
                    else:
                        losses.mean().backward()
                    optimizer.step()
                    tally.add(batch, losses)
                if prox is not None:
                    prox.pull()
                if progress is not None:
                    progress(step + 1, steps, tally.last)
        finally:
            optimizer.zero_grad(set_to_none=True)
            hooks.cleanup()
            for p in params:  # nothing of Opacus stays on the module
                for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                    if hasattr(p, attr):
                        delattr(p, attr)
            model.train(was_training)
            opacus_loader_log.setLevel(level)
            if ledger is not None and tally.steps > 0:
                ledger.charge(noise, sample_rate, tally.steps, purpose="dp-sgd",
                              round_id=round_id, enforce=False)

    if sum(s for _, _, s in engine.accountant.history) != sum(s for _, _, s in
                                                             [*prior, (0, 0, tally.steps)]):
        raise RuntimeError("Opacus' accountant and the privacy ledger disagree on the steps "
                           f"taken: {engine.accountant.history} vs {prior} + {tally.steps}")
    epsilon_run = epsilon_of([(noise, sample_rate, tally.steps)], delta=delta,
                             accountant=accountant)
    total = ledger.spent() if ledger is not None else epsilon_run
    return TrainResult(steps=tally.steps, examples=tally.examples, tokens=tally.tokens,
                       seconds=tally.seconds(), mean_loss=tally.mean_loss(),
                       epsilon_spent=total, noise_multiplier=noise, epsilon_run=epsilon_run,
                       delta=delta, accountant=accountant, sample_rate=sample_rate,
                       empty_steps=tally.empty)


def _privacy_terms(dp: DPConfig, ledger: Ledger | None) -> tuple[float, str]:
    """(delta, accountant) for this run: the ledger's, which a DPConfig may only repeat."""
    if ledger is None:
        if dp.delta is None or not 0 < dp.delta < 1:
            raise ConfigError(f"DP training without a ledger needs a delta in (0, 1), got "
                              f"{dp.delta}", where="DP config", fix="pass delta, e.g. 1e-5")
        return float(dp.delta), dp.accountant or "rdp"
    for name, mine, theirs in (("delta", dp.delta, ledger.delta),
                               ("accountant", dp.accountant, ledger.accountant)):
        if mine is not None and mine != theirs:
            raise ConfigError(f"DP config {name}={mine!r} differs from the ledger's {theirs!r}",
                              where=str(ledger.path), fix=f"use {name}={theirs!r}")
    return ledger.delta, ledger.accountant


# -- shared bits -----------------------------------------------------------------


class _Proximal:
    """FedProx's proximal term as a decoupled pull: after each optimizer step,
    ``w <- w - lr * mu * (w - w_start)``, the gradient step of ``mu/2 ||w - w_start||^2``.

    Applied outside the loss because the term depends on the weights only, not
    on any patient: under DP-SGD it needs no clipping or noise, and Opacus'
    per-sample gradients would otherwise drop it.
    """

    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.pairs = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def pull(self) -> None:
        for p, start in self.pairs:
            p.sub_(self.rate * (p - start))


def _forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


class _Tally:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.steps = self.empty = self.examples = self.tokens = 0
        self.loss_sum = 0.0
        self.loss_steps = 0
        self.last = float("nan")

    def add(self, batch: Batch, losses: torch.Tensor) -> None:
        self.steps += 1
        self.examples += int(batch.tokens.shape[0])
        self.tokens += int((batch.tokens != PAD_ID).sum())
        self.last = float(losses.detach().mean())
        self.loss_sum += self.last
        self.loss_steps += 1

    def add_empty(self) -> None:
        self.steps += 1
        self.empty += 1

    def mean_loss(self) -> float:
        return self.loss_sum / self.loss_steps if self.loss_steps else float("nan")

    def seconds(self) -> float:
        return time.perf_counter() - self.start
