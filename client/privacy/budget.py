"""The site's budget policy: how much noise a release gets, decided before any data is read.

One home for the rule every DP-SGD caller at a site follows (the federation's
training rounds, `fedehr model train-local --dp`, the benchmarks' site-alone
baseline): spread what is left of the site's lifetime budget over the steps
still planned (`PrivacyLedger.noise_for_budget`, a binary search on the
cumulative RDP/PRV epsilon), never go below site.yaml's
``privacy.min_noise_multiplier``, and check the ledger before a patient is
touched (`PrivacyLedger.check`; BudgetExceededError otherwise).
"""

from __future__ import annotations

from fedehr.client.privacy.ledger import PrivacyLedger


def noise_for_rounds_left(ledger: PrivacyLedger, *, sample_rate: float, steps_planned: int,
                          min_noise: float) -> float:
    """The noise multiplier for the next steps when `steps_planned` steps remain in all.

    The noise that brings the cumulative epsilon to the budget after every planned
    step, or `min_noise` if that is more; the ledger is checked for this round's
    steps by the trainer before it trains.
    """
    return max(float(min_noise), ledger.noise_for_budget(sample_rate, steps_planned))


def check_release(ledger: PrivacyLedger, noise_multiplier: float, sample_rate: float,
                  steps: int) -> float:
    """Refuse (BudgetExceededError) before touching data if the release would pass the
    budget; else return the cumulative epsilon it would bring the site to."""
    return ledger.check(noise_multiplier, sample_rate, steps)
