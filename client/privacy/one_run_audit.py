"""Empirical privacy audit of one DP-SGD run, after Steinke, Nasr and Jagielski 2023,
"Privacy auditing with one (1) training run" (NeurIPS 2023).

m canaries are planted in one training run, each included independently
with probability 1/2. The canaries are white-box gradient canaries (the
strongest kind in the paper): canary i is the gradient ``C * e_j`` on one
coordinate j of the parameters (a "Dirac" canary) with C the clipping bound,
so it is exactly what one patient at the clipping bound can contribute. An
included canary joins each step's clipped sum with the patients' sampling
probability q, before the noise is added (`train_dp(before_noise=...)`), so it
is one more Poisson-sampled patient to the mechanism.

After training, canary i's score is how far its coordinate moved against its
gradient. The audit guesses "included" for the k_in highest scores and
"excluded" for the k_out lowest (abstaining on the rest), and counts the right
guesses W out of r = k_in + k_out. If the run is
epsilon-DP, W is stochastically dominated by Binomial(r, e^eps / (1 + e^eps))
(the paper's Theorem 3.1); the lower bound is the largest epsilon that this
rejects at the given confidence. The bound ignores delta (the paper's
Theorem 5.2 treats it; at delta = 1e-5 and a few hundred guesses the
difference is far below the bound's resolution). `best_certifiable` is the
bound when every guess is right: the most an audit of this size can show.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom
from torch import nn

from fedehr.client.privacy import dp_sgd
from fedehr.shared.errors import ConfigError


def epsilon_lower_bound(correct: int, guesses: int, confidence: float = 0.95) -> float:
    """The largest epsilon rejected by ``P[Binomial(guesses, p_eps) >= correct] <= 1 -
    confidence`` with ``p_eps = e^eps / (1 + e^eps)``; 0 when not even 0 is rejected."""
    beta = 1.0 - confidence

    def tail(eps: float) -> float:
        return float(binom.sf(correct - 1, guesses, 1.0 / (1.0 + math.exp(-eps))))

    if guesses == 0 or tail(0.0) > beta:
        return 0.0
    low, high = 0.0, 1.0
    while tail(high) <= beta and high < 100:
        low, high = high, 2 * high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) <= beta else (low, mid)
    return low


class DiracCanaries:
    """m gradient canaries on distinct parameter coordinates, each in with probability 1/2."""

    def __init__(self, model: nn.Module, *, m: int, sample_rate: float, clip: float,
                 rng: np.random.Generator, within: str | None = None,
                 rows: list[int] | None = None):
        self.params = [p for p in model.parameters() if p.requires_grad]
        sizes = [p.numel() for p in self.params]
        offsets = np.cumsum([0, *sizes])
        pool = np.arange(sum(sizes))
        if within is not None:  # white-box: the auditor picks where data gradients are rare
            index = [n for n, p in model.named_parameters() if p.requires_grad].index(within)
            pool = pool[offsets[index]:offsets[index + 1]]
            if rows is not None:  # e.g. embedding rows of codes this site never has
                width = self.params[index][0].numel()
                pool = pool.reshape(-1, width)[np.asarray(rows)].reshape(-1)
        if m > len(pool):
            raise ConfigError(f"{m} canaries need {m} coordinates; there are {len(pool)}",
                              where="privacy audit", fix="use fewer canaries")
        self.coords = np.sort(rng.choice(pool, m, replace=False))
        self.included = rng.random(m) < 0.5
        self.sample_rate, self.clip, self.rng = sample_rate, clip, rng
        tensors = np.searchsorted(offsets, self.coords, side="right") - 1
        self._where = [(int(i), int(c - offsets[i])) for i, c in zip(tensors, self.coords,
                                                                     strict=True)]

    def flat(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1).cpu() for p in self.params]).double().numpy()

    def __call__(self) -> None:
        """Add the included canaries that this step samples to the clipped sum."""
        hits = self.included & (self.rng.random(len(self.coords)) < self.sample_rate)
        for (index, offset) in (w for w, hit in zip(self._where, hits, strict=True) if hit):
            self.params[index].summed_grad.view(-1)[offset] += self.clip

    def scores(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        return (start - end)[self.coords]  # a positive gradient pushes its coordinate down


@dataclass(frozen=True)
class AuditResult:
    canaries: int
    guesses: int  # k_in + k_out
    correct: int
    epsilon_lower_bound: float
    best_certifiable: float  # the bound if every guess were right
    epsilon_ledger: float  # what the accountant charged for this run


@dataclass(frozen=True)
class AuditRun:
    """One audited training run: the canaries' scores and who was in."""

    scores: np.ndarray
    included: np.ndarray
    epsilon_ledger: float

    def judge(self, k_in: int, k_out: int, confidence: float = 0.95) -> AuditResult:
        """Guess "in" for the k_in highest scores and "out" for the k_out lowest (abstain
        on the rest); fix k_in and k_out before looking, or split the confidence."""
        order = np.argsort(self.scores, kind="stable")
        chosen_in = order[len(order) - k_in:] if k_in else order[:0]
        correct = int(self.included[chosen_in].sum() + (~self.included[order[:k_out]]).sum())
        guesses = k_in + k_out
        return AuditResult(canaries=len(self.scores), guesses=guesses, correct=correct,
                           epsilon_lower_bound=epsilon_lower_bound(correct, guesses,
                                                                   confidence),
                           best_certifiable=epsilon_lower_bound(guesses, guesses, confidence),
                           epsilon_ledger=self.epsilon_ledger)


def audit_dp_sgd(model: nn.Module, dataset, *, dp: dp_sgd.DPConfig, steps: int,
                 batch_size: int, lr: float, canaries: int, seed: int = 0,
                 ledger=None, num_threads: int | None = None,
                 within: str | None = None, rows: list[int] | None = None) -> AuditRun:
    """One `train_dp` run of `model` on `dataset` with `canaries` Dirac canaries (on the
    parameter named `within`, restricted to its `rows`, or anywhere); the audit's own
    randomness (which canaries are in, when they are sampled) is `seed`'s."""
    rng = np.random.default_rng(seed)
    planted = DiracCanaries(model, m=canaries, sample_rate=batch_size / len(dataset),
                            clip=dp.max_grad_norm, rng=rng, within=within, rows=rows)
    start = planted.flat()
    result = dp_sgd.train_dp(model, dataset, dp=dp, ledger=ledger, steps=steps,
                             batch_size=batch_size, lr=lr, seed=seed,
                             num_threads=num_threads, before_noise=planted)
    return AuditRun(scores=planted.scores(start, planted.flat()), included=planted.included,
                    epsilon_ledger=result.epsilon_run)


@contextlib.contextmanager
def noise_silently_off() -> Iterator[None]:
    """A planted bug for control runs: DP-SGD adds no noise while the ledger is charged
    for the noise it was asked for. An audit must find the leak."""
    keyed = dp_sgd.use_keyed_noise

    def broken(optimizer, source, before_noise=None) -> None:
        keyed(optimizer, source, before_noise)
        optimizer.noise_multiplier = 0.0

    dp_sgd.use_keyed_noise = broken
    try:
        yield
    finally:
        dp_sgd.use_keyed_noise = keyed
