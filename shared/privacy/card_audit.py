"""Recompute every site's epsilon from a model card, with both accountants.

A checkpoint's model card records, per site, the epsilon its ledger reported,
the delta, the accountant and the ledger's whole charge history (each release
as ``[noise_multiplier, sample_rate, steps]``, `fedehr.shared.checkpoint.card`).
An auditor needs nothing else: this composes the history again with Opacus'
RDP accountant (Mironov 2017) and PRV accountant (Gopi, Lee, Wutschitz 2021)
and compares the reported value with the recomputation under the site's own
accountant. A reported epsilon below its recomputation is understated; so is
a positive epsilon without a history to check it against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedehr.shared.privacy.accounting import ACCOUNTANTS, epsilon_of

RELATIVE_TOLERANCE = 1e-6  # float noise of two runs of the same accountant


@dataclass(frozen=True)
class SiteAudit:
    site: str
    reported: float
    delta: float
    accountant: str
    rdp: float | None  # None: no history to recompute from
    prv: float | None
    problem: str | None  # why the reported value fails the audit, None if it passes

    @property
    def ok(self) -> bool:
        return self.problem is None


def audit_site(site: str, privacy: dict[str, Any]) -> SiteAudit:
    """Recompute one site's epsilon from its card entry and judge the reported value."""
    reported, delta = float(privacy["epsilon"]), float(privacy["delta"])
    accountant = str(privacy["accountant"])
    history = [(float(n), float(q), int(s)) for n, q, s in privacy.get("history") or []]
    if not history:
        problem = None if reported == 0 else "no charge history on the card to recompute from"
        return SiteAudit(site, reported, delta, accountant, None, None, problem)
    rdp = epsilon_of(history, delta=delta, accountant="rdp")
    prv = epsilon_of(history, delta=delta, accountant="prv")
    problem = None
    if accountant not in ACCOUNTANTS:
        problem = f"unknown accountant {accountant!r}: cannot say which bound was reported"
    else:
        own = rdp if accountant == "rdp" else prv
        if not math.isfinite(reported) or reported < own * (1 - RELATIVE_TOLERANCE):
            problem = f"reported {reported:.4f} is below the {accountant} recomputation {own:.4f}"
    return SiteAudit(site, reported, delta, accountant, rdp, prv, problem)


def audit_card(privacy: dict[str, dict[str, Any]]) -> list[SiteAudit]:
    """Every site of a model card's ``privacy`` section, in name order."""
    return [audit_site(site, privacy[site]) for site in sorted(privacy)]
