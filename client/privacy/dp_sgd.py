"""DP-SGD at a site: Opacus on the shared training loop, charged to the site's ledger.

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") follows
Opacus: `PrivacyEngine.make_private` with

- Poisson sampling: each patient window joins a step's batch with probability
  ``sample_rate = batch_size / len(dataset)`` (Opacus' `DPDataLoader`), so
  batch sizes vary and a batch can be empty. An empty batch skips the forward
  and backward pass but still takes a noise-only optimizer step and counts as a
  step for accounting: what the analysis assumes, and what keeps an empty
  batch from showing in the update.
- per-example clipping at ``max_grad_norm`` and Gaussian noise of std
  ``noise_multiplier * max_grad_norm``; the sum of clipped gradients plus noise
  is divided by the *expected* batch size, as Opacus' ``loss_reduction="mean"``
  does. The hooks see the summed loss (``"sum"``): under ``"mean"`` they would
  first multiply every layer's output gradient by the batch size to undo the
  mean, a pass over the [B, T, vocabulary] head gradient (6 % of a step).
  Ghost clipping keeps ``"mean"``: Opacus insists on one reduction there.
- the noise does not come from Opacus' torch generator (32 bits of seed) but
  from `fedehr.client.privacy.noise`: a Philox stream keyed by the 256-bit
  `seed`, four Gaussians summed per value as in Opacus' secure_mode. The
  optimizer's ``add_noise`` is replaced by one that draws from it.
- ``grad_sample_mode="hooks"`` (default, fastest on CPU) or ``"ghost"`` (ghost
  clipping, Li et al. 2022 / Bu et al. 2023).
- ``wrap_model=False``: Opacus attaches hooks to the model itself, so its
  state_dict never gains a ``_module.`` prefix; the hooks are removed when
  training ends, leaving a plain module to exchange.

Accounting: the site's `PrivacyLedger` is the accountant of record. Before
anything trains, the ledger checks that the run's steps fit the budget
(BudgetExceededError otherwise, and the model is untouched); after training it
is charged with the steps actually taken (also when training fails midway).
Opacus' own accountant is loaded with the ledger's history and cross-checked.

`train_dp` takes the plain trainer's keyword arguments plus `dp`, `ledger`
and `round_id`; its `seed` is the release's secret key (an int of up to 256
bits, `noise.fresh_key()` or `noise.derived_key(...)`): a small seed is
reproducible and therefore public, fit for tests and benchmarks only.
"""

from __future__ import annotations

import logging
import types
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from fedehr.client.privacy.ledger import PrivacyLedger
from fedehr.client.privacy.noise import GaussianNoise, sampling_seed
from fedehr.client.privacy.public_mix import PublicMix
from fedehr.shared.errors import ConfigError
from fedehr.shared.privacy.accounting import ACCOUNTANTS, epsilon_of, noise_multiplier_for
from fedehr.shared.tokenizer.batch import Batch
from fedehr.shared.training.trainer import (
    Progress,
    Proximal,
    Tally,
    TrainResult,
    check_run,
    forever,
)

GRAD_SAMPLE_MODES = ("hooks", "ghost")


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
class DPPlan:
    """What a run will be charged, fixed before anything trains (one process or many)."""

    patients: int  # len(dataset): the privacy units Poisson sampling draws from
    sample_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    accountant: str
    prior: list  # the ledger's history before this run


def train_dp(model: nn.Module, dataset: Dataset, *, steps: int, batch_size: int, lr: float,
             dp: DPConfig, ledger: PrivacyLedger | None = None,
             round_id: str | None = None, seed: int = 0,
             progress: Progress | None = None, weight_decay: float = 0.0,
             proximal_mu: float = 0.0, num_threads: int | None = None,
             device: str | torch.device = "cpu",
             before_noise: Callable[[], None] | None = None,
             after_noise: Callable[[list[torch.Tensor]], None] | None = None,
             processes: int = 1, frozen_rows: Sequence[int] = (),
             public: Dataset | None = None, public_per_step: int = 0) -> TrainResult:
    """Train `model` in place with DP-SGD for `steps` optimizer steps (AdamW) and report.

    `ledger` is the site's `PrivacyLedger` (None only for experiments that
    account for themselves: then `dp.delta` is required). `proximal_mu` > 0
    adds FedProx's pull towards the starting weights (Li et al. 2020).
    `processes` > 1 trains the same model in that many CPU processes
    (`fedehr.client.privacy.distributed`), with the same privacy and charge.
    `before_noise` is for white-box privacy audits only (`one_run_audit`): it
    runs at every step after clipping and before the noise is added.
    `after_noise` (audits and tests) sees the noised gradient the optimizer
    applies, at every step. `frozen_rows` (token ids) keep their rows of the
    token embedding and output head as they were (`keep_rows`). `public` with
    `public_per_step` > 0 adds that many public windows to every step's batch, clipped
    and noised with the patients' at the same privacy cost (`public_mix`).
    """
    if frozen_rows:
        after_noise = keep_rows(frozen_rows, model.config.vocab_size, weight_decay,
                                then=after_noise)
    plan = plan_dp_run(dataset, steps=steps, batch_size=batch_size, dp=dp, ledger=ledger,
                       round_id=round_id, seed=seed, num_threads=num_threads)
    mix = PublicMix(public, public_per_step, seed=seed) \
        if public is not None or public_per_step else None
    if processes > 1:
        from fedehr.client.privacy.distributed import train_dp_processes

        return train_dp_processes(
            model, dataset, plan, processes=processes, lr=lr, dp=dp, ledger=ledger,
            round_id=round_id, seed=seed, progress=progress, weight_decay=weight_decay,
            proximal_mu=proximal_mu, num_threads=num_threads, device=device,
            before_noise=before_noise, after_noise=after_noise, mix=mix)
    from opacus.data_loader import DPDataLoader

    torch.manual_seed(sampling_seed(seed))
    model.to(device)
    engine = privacy_engine(plan)
    loader = DPDataLoader(dataset, sample_rate=plan.sample_rate,
                          generator=torch.Generator().manual_seed(sampling_seed(seed)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    with private_model(model, engine, optimizer, loader, plan, dp) as (hooks, optimizer):
        use_keyed_noise(optimizer, GaussianNoise(seed, "dp-sgd"), before_noise)
        observe_noised_gradient(optimizer, after_noise)
        # Opacus derives q = 1/len(loader) = 1/floor(n/batch_size); use the exact q instead.
        optimizer.expected_batch_size = plan.sample_rate * plan.patients + \
            (mix.per_step if mix is not None else 0)
        optimizer.attach_step_hook(
            engine.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
        tally = Tally()
        try:
            dp_steps(model, hooks, optimizer, loader, tally, plan.steps, dp=dp, device=device,
                     proximal_mu=proximal_mu, lr=lr, progress=progress, mix=mix)
        finally:
            if ledger is not None and tally.steps > 0:
                ledger.charge(plan.noise_multiplier, plan.sample_rate, tally.steps,
                              purpose="dp-sgd", round_id=round_id, enforce=False)

    if sum(s for _, _, s in engine.accountant.history) != sum(s for _, _, s in
                                                             [*plan.prior, (0, 0, tally.steps)]):
        raise RuntimeError("Opacus' accountant and the privacy ledger disagree on the steps "
                           f"taken: {engine.accountant.history} vs {plan.prior} + {tally.steps}")
    return dp_result(plan, tally, ledger)


def plan_dp_run(dataset: Dataset, *, steps: int, batch_size: int, dp: DPConfig,
                ledger: PrivacyLedger | None, round_id: str | None, seed: int,
                num_threads: int | None) -> DPPlan:
    """Check the run and fix its noise and sampling rate; the ledger refuses it here if the
    budget cannot pay for it, before anything trains."""
    n = check_run(dataset, steps=steps, batch_size=batch_size, num_threads=num_threads)
    sample_rate = batch_size / n
    if sample_rate > 1:
        raise ConfigError(f"batch_size {batch_size} is larger than the dataset ({n} examples)",
                          where="trainer", fix=f"use batch_size <= {n}")
    if seed < 0:
        raise ConfigError("the DP seed must be a non-negative integer", where="trainer",
                          fix="pass noise.fresh_key()")
    delta, accountant = _privacy_terms(dp, ledger)
    if ledger is not None and round_id is not None and ledger.has_round(round_id):
        raise ConfigError(f"round {round_id!r} is already trained and charged at this site",
                          where=str(ledger.path), fix="send the stored update of that round; "
                          "training it again would be a second release")
    prior = list(ledger.history) if ledger is not None else []
    if dp.noise_multiplier is not None:
        noise = float(dp.noise_multiplier)
    elif ledger is not None:
        noise = ledger.noise_for_budget(sample_rate, steps, target_epsilon=dp.target_epsilon)
    else:
        noise = noise_multiplier_for(dp.target_epsilon, delta=delta, sample_rate=sample_rate,
                                     steps=steps, accountant=accountant)
    if ledger is not None:
        ledger.check(noise, sample_rate, steps)  # before anything trains
    return DPPlan(patients=n, sample_rate=sample_rate, noise_multiplier=noise, steps=steps,
                  delta=delta, accountant=accountant, prior=prior)


def privacy_engine(plan: DPPlan):
    """An Opacus PrivacyEngine whose accountant starts from the ledger's history."""
    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=plan.accountant)
    engine.accountant.load_state_dict({"history": list(plan.prior),
                                       "mechanism": plan.accountant})
    return engine


@contextmanager
def private_model(model: nn.Module, engine, optimizer, loader, plan: DPPlan, dp: DPConfig):
    """Opacus' per-example gradient hooks on `model` (no wrapper) and its DP optimizer;
    on exit nothing of Opacus stays on the module and its train/eval mode is restored."""
    from opacus.validators.errors import UnsupportedModuleError

    was_training = model.training
    model.train()
    try:
        hooks, dp_optimizer, *_ = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=plan.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            poisson_sampling=False,  # the loader already is
            loss_reduction="mean" if dp.grad_sample_mode == "ghost" else "sum",
            grad_sample_mode=dp.grad_sample_mode, wrap_model=False)
        dp_optimizer.loss_reduction = "mean"  # the hooks' sum, divided by the expected batch
    except UnsupportedModuleError as exc:
        model.train(was_training)
        raise ConfigError(f"the model cannot be trained with DP-SGD: {exc}", where="trainer",
                          fix="build a DP-ready model (opacus ModuleValidator.fix)") from exc
    model.per_example_grads = True  # EHRModel: the hooks need every layer's input batch-first
    try:
        yield hooks, dp_optimizer
    finally:
        hooks.cleanup()
        for p in model.parameters():  # nothing of Opacus stays on the module
            p.grad = None
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(p, attr):
                    delattr(p, attr)
        model.per_example_grads = False
        model.train(was_training)


def dp_steps(model: nn.Module, hooks, optimizer, loader, tally: Tally, steps: int, *,
             dp: DPConfig, device, proximal_mu: float, lr: float,
             progress: Progress | None, mix: PublicMix | None = None) -> None:
    """The DP-SGD loop: `steps` optimizer steps on Poisson batches, counted in `tally`.

    An empty batch takes a noise-only step (and counts: the analysis assumes it).
    With `mix`, each batch also holds public rows; `tally` counts the patients' rows only.
    """
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

    ghost = dp.grad_sample_mode == "ghost"
    params = [p for p in model.parameters() if p.requires_grad]
    prox = Proximal(model, proximal_mu * lr) if proximal_mu > 0 else None
    with warnings.catch_warnings():
        # the first module (the embedding) gets no input gradient: expected, not news
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        # Opacus logs a warning when the *first* Poisson batch is empty; we handle it
        opacus_loader_log = logging.getLogger("opacus.data_loader")
        level = opacus_loader_log.level
        opacus_loader_log.setLevel(logging.ERROR)
        try:
            for step, parts in zip(range(steps), forever(loader), strict=False):
                batch = Batch.from_tuple(parts).to(device)
                private = batch.tokens.shape[0]
                if mix is not None:
                    batch = mix.join(batch)
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
                        losses.sum().backward()
                    optimizer.step()
                    if private:
                        tally.add(Batch(*(t[:private] for t in batch)), losses[:private])
                    else:
                        tally.add_empty()
                if prox is not None:
                    prox.pull()
                if progress is not None:
                    progress(step + 1, steps, tally.last)
        finally:
            optimizer.zero_grad(set_to_none=True)
            opacus_loader_log.setLevel(level)


def dp_result(plan: DPPlan, tally: Tally, ledger: PrivacyLedger | None) -> TrainResult:
    epsilon_run = epsilon_of([(plan.noise_multiplier, plan.sample_rate, tally.steps)],
                             delta=plan.delta, accountant=plan.accountant)
    total = ledger.spent() if ledger is not None else epsilon_run
    return TrainResult(steps=tally.steps, examples=tally.examples, tokens=tally.tokens,
                       seconds=tally.seconds(), mean_loss=tally.mean_loss(),
                       epsilon_spent=total, noise_multiplier=plan.noise_multiplier,
                       epsilon_run=epsilon_run, delta=plan.delta, accountant=plan.accountant,
                       sample_rate=plan.sample_rate, empty_steps=tally.empty)


def use_keyed_noise(optimizer, source: GaussianNoise | None,
                    before_noise: Callable[[], None] | None = None) -> None:
    """Make an Opacus DPOptimizer draw its Gaussian noise from `source`.

    Mirrors ``DPOptimizer.add_noise`` (noise of std noise_multiplier x
    max_grad_norm on each parameter's summed clipped gradient), with the
    keyed generator in place of Opacus' torch generator. `source` None adds
    no noise: the processes of a distributed run other than the one that noises.
    """
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    def add_noise(self) -> None:
        if before_noise is not None:
            before_noise()
        std = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier) \
            * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            noised = p.summed_grad if source is None else \
                p.summed_grad + source.like(std, p.summed_grad)
            p.grad = noised.view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = types.MethodType(add_noise, optimizer)


def keep_rows(rows: Sequence[int], vocab_size: int, weight_decay: float,
              then: Callable[[list[torch.Tensor]], None] | None = None
              ) -> Callable[[list[torch.Tensor]], None]:
    """An `after_noise` hook that zeroes `rows` of the noised gradient of every
    vocabulary-sized parameter (token embedding, output head), so that AdamW, whose
    moments then stay zero there, leaves those rows exactly as they were. It acts on
    the released (noised) gradient only: post-processing, the privacy cost is the same.
    Which rows is public (vocab_round.anchor_only: the anchor's tokens)."""
    if weight_decay:
        raise ConfigError("frozen rows need weight_decay 0 (AdamW would shrink them)",
                          where="DP training", fix="train with weight_decay=0")
    index = torch.tensor(sorted(set(rows)), dtype=torch.long)

    def hook(grads: list[torch.Tensor]) -> None:
        for g in grads:
            if g is not None and g.shape[0] == vocab_size:
                g[index] = 0
        if then is not None:
            then(grads)
    return hook


def observe_noised_gradient(optimizer, after_noise: Callable[[list[torch.Tensor]], None] | None
                            ) -> None:
    """Call `after_noise` with the gradients the wrapped optimizer is about to apply
    (noised, scaled and, in a distributed run, summed over the processes)."""
    if after_noise is None:
        return
    inner = optimizer.original_optimizer
    step = inner.step

    def observed_step(*args, **kwargs):
        after_noise([p.grad for p in optimizer.params])
        return step(*args, **kwargs)

    inner.step = observed_step


def _privacy_terms(dp: DPConfig, ledger: PrivacyLedger | None) -> tuple[float, str]:
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
