"""The site's privacy room: every release a site makes is built, limited and charged here.

- `ledger`: the privacy ledger every release is charged to (RDP or PRV, at one delta);
- `budget`: noise for the rounds left, the minimum noise, the check before any data;
- `noise`: 256-bit keys and the Philox Gaussian source (secure-mode sums);
- `dp_sgd`: DP-SGD with Opacus on the shared training loop (`train_dp`);
- `count_release`: the vocabulary round's noised code counts and value histograms;
- `metric_release`: a noised held-out loss (site.yaml ``release_metrics: noised``);
- `one_run_audit`: the empirical audit of a DP-SGD run with gradient canaries.

Only the ledger is imported here, so that light callers (metrics, status) stay light.
"""

from fedehr.client.privacy.ledger import (
    ACCOUNTANTS,
    PURPOSES,
    BudgetExceededError,
    LedgerEntry,
    PrivacyLedger,
)

__all__ = ["ACCOUNTANTS", "PURPOSES", "BudgetExceededError", "LedgerEntry", "PrivacyLedger"]
