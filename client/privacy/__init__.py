"""The site's privacy bookkeeping: the ledger every release from the site is charged to."""

from fedehr.client.privacy.ledger import (
    ACCOUNTANTS,
    PURPOSES,
    BudgetExceededError,
    LedgerEntry,
    PrivacyLedger,
)

__all__ = ["ACCOUNTANTS", "PURPOSES", "BudgetExceededError", "LedgerEntry", "PrivacyLedger"]
