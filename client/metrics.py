"""A hospital site's Prometheus metrics, read from its state_dir at scrape time.

Flower runs the ClientApp in short-lived processes, one per message, so no
process lives long enough to keep counters. This collector reads what the
site already persists instead: the privacy ledger (epsilon spent, budget,
every release charged), the activity log (`client/activity.py`: each
training round's steps, examples, seconds and patients, each refusal) and the
daemon's view of the consortium link (state_dir/consortium.json). The
numbers survive restarts of the daemon and of Flower's processes, and
`fedehr site status` reads the same files.

The endpoint binds loopback unless site.yaml sets ``metrics_host``
(`metrics_server`): exposing it is the site's explicit choice.

Every metric carries `site="<name>"`. Nothing here is record-level: the
values are the same aggregates the site already sends to the server or keeps
in its ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedehr.client import activity
from fedehr.client.config import SiteConfig
from fedehr.client.privacy import PURPOSES, PrivacyLedger
from fedehr.client.supernode import read_link
from fedehr.shared.monitoring import MonitoringServer


def metrics_server(site: SiteConfig, health: Callable[[], bool] | None = None
                   ) -> MonitoringServer:
    """The site's /metrics and /healthz, on site.yaml's metrics_host (loopback unless
    the site exposes it deliberately) and metrics_port; call `.start()` to serve."""
    return MonitoringServer([SiteCollector(site)], port=site.metrics_port or 0,
                            host=site.metrics_host, health=health,
                            service=f"site {site.name}")


class SiteCollector(Collector):
    """Metrics of one site, from its privacy ledger and activity log."""

    def __init__(self, site: SiteConfig):
        self.site = site

    def collect(self) -> Iterator[Metric]:
        yield from self._privacy()
        yield from self._activity(activity.read(self.site.state_dir))
        yield from self._consortium()

    def _consortium(self) -> Iterator[Metric]:
        """The daemon's view of the consortium link (client/supernode.py, LinkWatch);
        nothing before the daemon's SuperNode first reached or missed the SuperLink."""
        link = read_link(self.site.state_dir)
        if link is None:
            return
        yield self._gauge("fedehr_site_consortium_reachable", "1 while the site is in the "
                          "federation, 0 while it is not (link lost, SuperLink down or "
                          "refusing; the daemon keeps retrying).",
                          1.0 if link.reachable else 0.0)
        yield self._gauge("fedehr_site_consortium_unreachable_seconds", "How long the "
                          "current outage of the consortium link has lasted (0 when "
                          "reachable).", 0.0 if link.reachable else time.time() - link.since)
        yield self._gauge("fedehr_site_consortium_retry_seconds", "The wait between two "
                          "tries to reach the consortium now (0 when reachable).",
                          0.0 if link.reachable else link.retry_seconds)

    def _privacy(self) -> Iterator[Metric]:
        p = self.site.privacy
        spent, budget, releases = 0.0, p.epsilon, dict.fromkeys(PURPOSES, 0)
        ledger = PrivacyLedger.read(self.site.ledger_path)  # a scrape never writes it
        if ledger is not None:
            spent = ledger.spent()
            for entry in ledger.entries:
                releases[entry.purpose] = releases.get(entry.purpose, 0) + 1
        yield self._gauge("fedehr_site_epsilon_spent", "Cumulative epsilon spent at this "
                          "site's delta, per its privacy ledger.", spent)
        yield self._gauge("fedehr_site_epsilon_remaining", "Epsilon left before the site "
                          "refuses to release anything more.", max(0.0, budget - spent))
        yield self._gauge("fedehr_site_epsilon_budget", "The site's lifetime epsilon budget "
                          "(site.yaml privacy.epsilon).", budget)
        family = CounterMetricFamily("fedehr_site_releases", "Releases charged to the privacy "
                                     "ledger, by kind (dp-sgd: a trained update; "
                                     "vocab-release: noised counts or value histograms; "
                                     "metric-release: a noised held-out loss).",
                                     labels=["site", "kind"])
        for kind, count in releases.items():
            family.add_metric([self.site.name, kind], count)
        yield family

    def _activity(self, events: list[dict]) -> Iterator[Metric]:
        trains = [e for e in events if e.get("kind") == "train"]
        refusals = [e for e in events if e.get("kind") == "refusal"]
        yield self._counter("fedehr_site_local_steps", "DP-SGD steps trained locally, over "
                            "all rounds.", sum(int(e.get("steps", 0)) for e in trains))
        yield self._counter("fedehr_site_errors", "Requests the site refused (budget, "
                            "vocabulary, bad request), from the activity log.", len(refusals))
        if not trains:
            return
        last = trains[-1]
        seconds = float(last.get("seconds") or 0.0)
        if seconds > 0:
            yield self._gauge("fedehr_site_samples_per_second", "Training examples per second "
                              "in the last round.", float(last.get("examples", 0)) / seconds)
        yield self._gauge("fedehr_site_last_round_timestamp_seconds", "When the site last "
                          "finished training a round (Unix time).", last["time"])
        if last.get("patients") is not None:
            yield self._gauge("fedehr_site_patients", "Patients in the training split in the "
                              "last round (the FedAvg weight).", last["patients"])

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=["site"])
        family.add_metric([self.site.name], float(value))
        return family

    def _counter(self, name: str, documentation: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=["site"])
        family.add_metric([self.site.name], float(value))
        return family
