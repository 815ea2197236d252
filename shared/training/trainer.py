"""The plain training loop of fedehr: public data and baselines, never private data.

The model is any `nn.Module` with ``per_example_loss(batch: Batch) -> Tensor[B]``
(the fedehr EHRModel); the dataset yields the tuples of
`fedehr.shared.tokenizer.batch.FIELDS`. Training on a site's patients is
DP-SGD, which lives in the site's privacy room
(`fedehr.client.privacy.dp_sgd.train_dp`) and reuses the pieces here
(`TrainResult`, `Tally`, `Proximal`, `forever`); `train` refuses a `dp`
config or a ledger and says where to go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedehr.shared.errors import ConfigError, DataError
from fedehr.shared.tokenizer.batch import PAD_ID, Batch

# progress(step, steps, loss): called after every optimizer step
Progress = Callable[[int, int, float], None]


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
    best_step: int | None = None  # train_early_stopped: the step whose weights were kept
    tuning_loss: float | None = None  # ... and their loss on the tuning set


def train(model: nn.Module, dataset: Dataset, *, steps: int, batch_size: int, lr: float,
          dp: Any = None, ledger: Any = None, round_id: str | None = None, seed: int = 0,
          progress: Progress | None = None, weight_decay: float = 0.0,
          proximal_mu: float = 0.0, num_threads: int | None = None,
          device: str | torch.device = "cpu") -> TrainResult:
    """Train `model` in place on public data for `steps` optimizer steps (AdamW).

    `dp` and `ledger` must be None: private data is trained on only with
    DP-SGD in the site's privacy room. `proximal_mu` > 0 adds FedProx's pull
    towards the starting weights (Li et al. 2020).
    """
    if dp is not None or ledger is not None:
        raise ConfigError("the plain trainer does not train on private data",
                          where="trainer", fix="call fedehr.client.privacy.dp_sgd.train_dp "
                          "for DP-SGD, or pass dp=None and no ledger for public data")
    check_run(dataset, steps=steps, batch_size=batch_size, num_threads=num_threads)
    torch.manual_seed(seed)
    model.to(device)
    prox = Proximal(model, proximal_mu * lr) if proximal_mu > 0 else None
    return _train_plain(model, dataset, steps=steps, batch_size=batch_size, lr=lr,
                        seed=seed, progress=progress, weight_decay=weight_decay,
                        device=device, prox=prox)


def check_run(dataset: Dataset, *, steps: int, batch_size: int,
              num_threads: int | None) -> int:
    """Checks every training loop makes before it starts; sets the threads; returns len(dataset)."""
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the training dataset is empty", where="trainer",
                        fix="check the data folder and the tokenizer settings")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1 (got {steps}, {batch_size})",
                          where="trainer", fix="pass positive numbers")
    return n


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int, *,
             num_threads: int | None = None,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Mean per-example loss over `dataset` and its perplexity ``exp(loss)``.

    Runs under `torch.no_grad()` in eval mode (so it never disturbs Opacus'
    hooks), and restores the model's previous mode.
    """
    losses = per_example_losses(model, dataset, batch_size, num_threads=num_threads,
                                device=device)
    loss = float(losses.double().mean())
    return loss, math.exp(min(loss, 700.0))


@torch.no_grad()
def per_example_losses(model: nn.Module, dataset: Dataset, batch_size: int, *,
                       num_threads: int | None = None,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """Each example's loss over `dataset`, in order (eval mode, restored afterwards)."""
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("the evaluation dataset is empty", where="evaluate",
                        fix="check the tuning split of the data")
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.per_example_loss(Batch.from_tuple(parts).to(device)).cpu()
                          for parts in DataLoader(dataset, batch_size=batch_size,
                                                  shuffle=False)])
    finally:
        model.train(was_training)


# -- non-private ---------------------------------------------------------------


def _train_plain(model, dataset, *, steps, batch_size, lr, seed, progress, weight_decay,
                 device, prox) -> TrainResult:
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                        generator=generator, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    tally = Tally()
    was_training = model.training
    model.train()
    try:
        for step, parts in zip(range(steps), forever(loader), strict=False):
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


def train_early_stopped(model: nn.Module, dataset: Dataset, tuning: Dataset, *,
                        max_steps: int, batch_size: int, lr: float, seed: int = 0,
                        eval_every: int = 25, patience: int = 2, warmup: int = 10,
                        clip_norm: float = 1.0, progress: Progress | None = None,
                        device: str | torch.device = "cpu") -> TrainResult:
    """Train on public data until the loss on `tuning` stops falling; keep the best weights.

    Made for the warm start on the anchor's 100 patients, which overfits within about
    100 steps and, at a constant rate without clipping, landed 0.8 nats apart in tuning
    loss from one seed to the next (issue 12). Here the rate rises over `warmup` steps and
    decays on a cosine to 0 at `max_steps`, gradients are clipped to `clip_norm`, the
    tuning loss is measured every `eval_every` steps, and training stops after `patience`
    measurements without a new best, with the best weights restored.
    """
    check_run(dataset, steps=max_steps, batch_size=batch_size, num_threads=None)
    torch.manual_seed(seed)
    model.to(device)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        warmup_cosine, warmup=warmup, steps=max_steps))
    best_loss, best_step, best_state, misses = math.inf, 0, None, 0
    tally = Tally()
    was_training = model.training
    model.train()
    for step, parts in zip(range(1, max_steps + 1), forever(loader), strict=False):
        batch = Batch.from_tuple(parts).to(device)
        losses = model.per_example_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        schedule.step()
        tally.add(batch, losses)
        if progress is not None:
            progress(step, max_steps, tally.last)
        if step % eval_every and step != max_steps:
            continue
        loss, _ = evaluate(model, tuning, batch_size=batch_size, device=device)
        if loss < best_loss:
            best_loss, best_step, misses = loss, step, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            misses += 1
            if misses >= patience:
                break
    model.load_state_dict(best_state)
    model.train(was_training)
    return TrainResult(steps=tally.steps, examples=tally.examples, tokens=tally.tokens,
                       seconds=tally.seconds(), mean_loss=tally.mean_loss(), epsilon_spent=0.0,
                       noise_multiplier=None, best_step=best_step, tuning_loss=best_loss)


def warmup_cosine(step: int, *, warmup: int, steps: int) -> float:
    """The learning rate's factor at `step`: linear warm-up, then a cosine down to 0."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


# -- shared bits -----------------------------------------------------------------


class Proximal:
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


def forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


class Tally:
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
