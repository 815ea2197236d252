"""fedehr.server: the consortium side (Flower ServerApp, strategies, registry)."""
