"""Privacy accounting: how much epsilon a history of Gaussian releases costs.

The mathematics is Opacus' (``opacus.accountants``): Rényi DP (Mironov 2017;
Mironov, Talwar, Zhang 2019) by default, PRV (Gopi, Lee, Wutschitz 2021) as
an option. A history is a list of ``(noise_multiplier, sample_rate, steps)``
triples, the form Opacus' accountants compose; a Gaussian release of counts is
one step with ``sample_rate=1.0``. The site's persisted ledger
(`fedehr.client.privacy.ledger`), DP-SGD (`fedehr.client.privacy.dp_sgd`) and
the model card's audit (`fedehr.shared.privacy.card_audit`) build on these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from opacus.accountants import IAccountant, RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis

from fedehr.shared.errors import ConfigError, FedEHRError

ACCOUNTANTS = ("rdp", "prv")
MAX_NOISE_MULTIPLIER = 1e6

History = list[tuple[float, float, int]]


class BudgetExceededError(FedEHRError):
    """A release would take the site past its privacy budget; nothing was released."""

    exit_code = 3


def make_accountant(accountant: str, history: Iterable[tuple[float, float, int]] = ()
                    ) -> IAccountant:
    """An Opacus accountant of kind `accountant` holding `history`."""
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}", where="privacy ledger",
                          fix=f"use one of {', '.join(ACCOUNTANTS)}")
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(n), float(q), int(s)) for n, q, s in history]
    return acc


def epsilon_of(history: Iterable[tuple[float, float, int]], *, delta: float,
               accountant: str = "rdp") -> float:
    """Epsilon at `delta` of the composition of `history` (0 for an empty history)."""
    history = [h for h in history if h[2] > 0]
    if not history:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):  # PRV at sample_rate 1.0 logs log(0)
        if accountant == "rdp":  # Opacus' RDPAccountant.get_epsilon, each term cached
            rdp = sum([np.asarray(_rdp(float(n), float(q), int(s))) for n, q, s in history])
            eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS,
                                                    rdp=rdp, delta=delta)
            return float(eps)
        return float(make_accountant(accountant, history).get_epsilon(delta=delta))


@lru_cache(maxsize=4096)
def _rdp(noise_multiplier: float, sample_rate: float, steps: int) -> tuple[float, ...]:
    """One release's RDP at Opacus' default orders. Cached: a site's noise search,
    budget checks and charges recompose the same earlier releases dozens of times
    per round, at about 0.1 s each for a subsampled release."""
    return tuple(rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier,
                                          steps=steps, orders=RDPAccountant.DEFAULT_ALPHAS))


def noise_multiplier_for(target_epsilon: float, *, delta: float, sample_rate: float,
                         steps: int, accountant: str = "rdp",
                         prior: Iterable[tuple[float, float, int]] = (),
                         tolerance: float = 0.01) -> float:
    """The smallest noise multiplier (within `tolerance` in epsilon) such that `prior`
    followed by `steps` steps at `sample_rate` costs at most `target_epsilon` in total.

    Opacus' `get_noise_multiplier` does the same binary search without a prior
    history; a site needs the prior so that epsilon is cumulative.
    """
    prior = list(prior)
    check_mechanism(1.0, sample_rate, steps)
    spent = epsilon_of(prior, delta=delta, accountant=accountant)
    if target_epsilon <= spent + tolerance:
        raise BudgetExceededError(
            f"no noise level reaches epsilon {target_epsilon:.3g}: {spent:.3g} is already spent",
            where="privacy ledger",
            fix="raise the target epsilon or the site budget deliberately, or train less")

    def total(sigma: float) -> float:
        return epsilon_of([*prior, (sigma, sample_rate, steps)], delta=delta,
                          accountant=accountant)

    low, high = 0.0, 1.0
    eps_high = total(high)
    while eps_high > target_epsilon:
        low, high = high, 2 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise BudgetExceededError(
                f"epsilon {target_epsilon:.3g} is out of reach for {steps} steps at sample "
                f"rate {sample_rate:.3g} ({spent:.3g} already spent)",
                where="privacy ledger", fix="train fewer steps or raise the target epsilon")
        eps_high = total(high)
    for _ in range(100):
        if target_epsilon - eps_high <= tolerance:
            break
        mid = (low + high) / 2
        eps = total(mid)
        if eps < target_epsilon:
            high, eps_high = mid, eps
        else:
            low = mid
    return high


def check_mechanism(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    where = "privacy ledger"
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ConfigError(f"noise multiplier must be positive, got {noise_multiplier}",
                          where=where, fix="use a noise multiplier > 0 (DP needs noise)")
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample rate must be in (0, 1], got {sample_rate}", where=where,
                          fix="use batch_size <= number of patients (1.0 for a count release)")
    if int(steps) != steps or steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps}", where=where,
                          fix="pass a whole number of steps")
