"""fedehr.client: the hospital side (Flower ClientApp, DP trainer, privacy ledger)."""
