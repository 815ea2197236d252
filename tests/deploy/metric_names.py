"""The Prometheus metric names deploy/ may use (Grafana dashboard, alert rules).

One list, read by tests/deploy/test_deploy_files.py. The names are the contract
with fedehr.server.metrics and fedehr.client.metrics; a test checks that those
modules export every one of them, so a rename there fails here instead of
leaving an empty dashboard panel.
"""

from __future__ import annotations

# name -> label names (besides Prometheus' own job/instance)
SERVER_METRICS: dict[str, tuple[str, ...]] = {
    "fedehr_rounds_completed_total": (),
    "fedehr_round_duration_seconds": (),
    "fedehr_round_sites": ("state",),
    "fedehr_updates_rejected_total": (),
    "fedehr_update_norm": ("site",),
    "fedehr_bytes_received_total": (),
    "fedehr_bytes_sent_total": (),
    "fedehr_aggregation_seconds": (),
    "fedehr_checkpoints_published_total": (),
    "fedehr_anchor_loss": (),
    "fedehr_site_eval_loss": ("site",),
    "fedehr_site_epsilon": ("site",),
    "fedehr_run_phase": ("phase",),
    "fedehr_registry_pulls_total": ("researcher", "complete"),
    "fedehr_registry_pull_bytes_total": ("researcher",),
}

SITE_METRICS: dict[str, tuple[str, ...]] = {
    "fedehr_site_epsilon_spent": ("site",),
    "fedehr_site_epsilon_remaining": ("site",),
    "fedehr_site_epsilon_budget": ("site",),
    "fedehr_site_local_steps_total": ("site",),
    "fedehr_site_samples_per_second": ("site",),
    "fedehr_site_last_round_timestamp_seconds": ("site",),
    "fedehr_site_errors_total": ("site",),
    "fedehr_site_patients": ("site",),
    "fedehr_site_releases_total": ("site", "kind"),
    "fedehr_site_consortium_reachable": ("site",),
    "fedehr_site_consortium_unreachable_seconds": ("site",),
    "fedehr_site_consortium_retry_seconds": ("site",),
}

ROUND_SITE_STATES = ("participating", "rejected", "failed", "late")

ALL_METRICS: dict[str, tuple[str, ...]] = {**SERVER_METRICS, **SITE_METRICS}
