"""The site's budget policy: how much noise a release gets, decided before any data is read.

One home for the rule every DP-SGD caller at a site follows (the federation's
training rounds, `fedehr model train-local --dp`, the benchmarks' site-alone
baseline): spread what is left of the run's share of the site's lifetime
budget (`run_target`, site.yaml ``privacy.epsilon_per_run``) over the steps
still planned (`PrivacyLedger.noise_for_budget`, a binary search on the
cumulative RDP/PRV epsilon), never go below site.yaml's
``privacy.min_noise_multiplier``, and check the ledger before a patient is
touched (`PrivacyLedger.check`; BudgetExceededError otherwise).
"""

from __future__ import annotations

from fedehr.client.privacy.ledger import BudgetExceededError, PrivacyLedger


def noise_for_rounds_left(ledger: PrivacyLedger, *, sample_rate: float, steps_planned: int,
                          min_noise: float, target_epsilon: float | None = None) -> float:
    """The noise multiplier for the next steps when `steps_planned` steps remain in all.

    The noise that brings the cumulative epsilon to `target_epsilon` (default the
    whole budget; a site passes its run's `run_target`) after every planned step,
    or `min_noise` if that is more; the ledger is checked for this round's steps
    before training.
    """
    return max(float(min_noise), ledger.noise_for_budget(sample_rate, steps_planned,
                                                         target_epsilon=target_epsilon))


def check_release(ledger: PrivacyLedger, noise_multiplier: float, sample_rate: float,
                  steps: int) -> float:
    """Refuse (BudgetExceededError) before touching data if the release would pass the
    budget; else return the cumulative epsilon it would bring the site to."""
    return ledger.check(noise_multiplier, sample_rate, steps)


# -- one run's share (privacy.epsilon_per_run; docs/site.md, "Before you start") -------
#
# A run is everything released under one federation name: round ids are
# "<federation>/<round>", so a resumed run stays the same run and keeps its share.
# A run's spend is how much it raises the lifetime epsilon: epsilon of every
# charge minus epsilon of every charge that is not the run's. Each release of the
# run is chosen and checked so that this stays within the run's share.


def run_of(round_id: str) -> str:
    """The run (federation name) a release belongs to."""
    return str(round_id).split("/", 1)[0]


def _is_run(entry, run: str) -> bool:
    return entry.round_id is not None and run_of(entry.round_id) == run


def spent_by_others(ledger: PrivacyLedger, run: str) -> float:
    return ledger.spent_by([e for e in ledger.entries if not _is_run(e, run)])


def spent_by_run(ledger: PrivacyLedger, run: str) -> float:
    """How much `run` has raised the site's lifetime epsilon so far."""
    return max(0.0, ledger.spent() - spent_by_others(ledger, run))


def has_trained(ledger: PrivacyLedger, run: str) -> bool:
    return any(e.purpose == "dp-sgd" and _is_run(e, run) for e in ledger.entries)


def run_target(ledger: PrivacyLedger, run: str, run_budget: float) -> float:
    """The cumulative epsilon the run may bring the site to: its share on top of what
    every other release cost, never past the lifetime budget."""
    return min(ledger.epsilon_budget, spent_by_others(ledger, run) + float(run_budget))


def run_allowance(ledger: PrivacyLedger, run: str | None, run_budget: float) -> float:
    """The most the run (None: a run not started yet) may still add to the lifetime epsilon."""
    used = 0.0 if run is None else spent_by_run(ledger, run)
    return max(0.0, min(float(run_budget) - used, ledger.remaining()))


def check_run_release(ledger: PrivacyLedger, run: str, run_budget: float,
                      noise_multiplier: float, sample_rate: float, steps: int) -> float:
    """`check_release`, and refuse a release that would take the run past its share."""
    after = check_release(ledger, noise_multiplier, sample_rate, steps)
    target = run_target(ledger, run, run_budget)
    if after > target * (1 + 1e-9):
        raise BudgetExceededError(
            f"run {run!r} would raise epsilon to {after:.3f}, past its share: at most "
            f"{run_budget:g} per run (privacy.epsilon_per_run) on top of the "
            f"{spent_by_others(ledger, run):.3f} spent by other runs",
            where=str(ledger.path), fix="start a new run (a new federation name) for more, "
            "or raise privacy.epsilon_per_run deliberately")
    return after


def announcement(ledger: PrivacyLedger, run: str | None, run_budget: float, *,
                 trial: bool) -> str:
    """'this run will spend up to X of remaining Y (lifetime Z)', TRIAL-marked if so."""
    who = "each run" if run is None else f"run {run!r}"
    used = "" if run is None or not spent_by_run(ledger, run) else \
        f" (it has spent {spent_by_run(ledger, run):.3f} already)"
    text = (f"{who} will spend up to epsilon {run_allowance(ledger, run, run_budget):.3f} of "
            f"remaining {ledger.remaining():.3f} (lifetime {ledger.epsilon_budget:g}, delta "
            f"{ledger.delta:g}, {ledger.accountant}){used}")
    return trial_tag(trial) + text


def trial_tag(trial: bool) -> str:
    return "TRIAL ledger (sandbox budget, not the site's real one): " if trial else ""
