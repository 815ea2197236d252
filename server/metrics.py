"""The coordination server's Prometheus metrics, read from the federation workdir.

The ServerApp runs in a process Flower starts per run, so it cannot hold a
metrics registry for long. Instead this collector reads, at every scrape,
what the run already persists: `workdir/status.json` (phase, and one entry
per finished round: participants, rejected and failed updates, update norms,
bytes, timings, losses, the epsilon each site reported) and the signed
checkpoint folders `workdir/checkpoints/round-NNNN`. The numbers therefore
survive restarts of the server and of the exporter.

Counters (`*_total`) are sums over the rounds of the run in status.json; a
new run in the same workdir starts them again (Prometheus treats that as a
counter reset). Gauges named "last round" describe the newest training round.

Registry pulls come from the consortium audit log, where the registry writes
one `pull` line per transfer (complete or cut off), so they too survive restarts
and count pulls served by a registry running in another process.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedehr.server.status import PHASES, read_status
from fedehr.shared import audit

ROUND_DIR = re.compile(r"^round-\d+$")
SITE_STATES = ("participating", "rejected", "failed", "late")


class ServerCollector(Collector):
    """Metrics of the federation whose workdir is `workdir`."""

    def __init__(self, workdir: Path, audit_path: Path | None = None):
        self.workdir = Path(workdir)
        self.audit_path = audit_path

    def collect(self) -> Iterator[Metric]:
        status = read_status(self.workdir / "status.json") or {}
        rounds = sorted((r for r in status.get("rounds", []) if isinstance(r, dict)),
                        key=lambda r: r.get("round", 0))
        training = [r for r in rounds if r.get("round", 0) >= 1]
        last = training[-1] if training else None

        yield from self._run(status)
        yield _counter("fedehr_rounds_completed", "Training rounds finished and checkpointed "
                       "in the current run.", len(training))
        yield _counter("fedehr_updates_rejected", "Site updates rejected by screening "
                       "(non-finite values, wrong shapes, update norm over the bound).",
                       sum(len(r.get("rejected") or {}) for r in training))
        yield _counter("fedehr_bytes_received", "Model-update array bytes received from sites.",
                       sum(r.get("bytes_in", 0) for r in training))
        yield _counter("fedehr_bytes_sent", "Model array bytes sent to sites for training.",
                       sum(r.get("bytes_out", 0) for r in training))
        yield _counter("fedehr_checkpoints_published", "Signed global checkpoints in the "
                       "workdir (round 0, the warm start, included).", self._checkpoints())
        if last is not None:
            yield from self._last_round(last)
        yield from self._losses_and_privacy(rounds)
        yield from self._pulls()

    # -- pieces ----------------------------------------------------------------------

    def _run(self, status: dict) -> Iterator[Metric]:
        phase = GaugeMetricFamily("fedehr_run_phase", "1 for the phase the current run is in.",
                                  labels=["phase"])
        current = status.get("phase")
        for name in PHASES:
            phase.add_metric([name], 1.0 if name == current else 0.0)
        yield phase
        yield _gauge("fedehr_round", "The round the run is in or finished last (0: warm "
                     "start).", status.get("round", 0))
        if "updated_at" in status:
            yield _gauge("fedehr_status_updated_timestamp_seconds", "When the ServerApp last "
                         "wrote status.json (Unix time).", status["updated_at"])

    def _last_round(self, last: dict) -> Iterator[Metric]:
        if last.get("seconds") is not None:
            yield _gauge("fedehr_round_duration_seconds", "Wall time of the last round: "
                         "training, screening, aggregation, evaluation, checkpoint.",
                         last["seconds"])
        if last.get("aggregation_seconds") is not None:
            yield _gauge("fedehr_aggregation_seconds", "Time the strategy took to aggregate "
                         "the last round's updates.", last["aggregation_seconds"])
        sites = GaugeMetricFamily("fedehr_round_sites", "Sites in the last round by outcome.",
                                  labels=["state"])
        counts = (len(last.get("participants") or []), len(last.get("rejected") or {}),
                  len(last.get("failed") or []), len(last.get("late") or []))
        for state, count in zip(SITE_STATES, counts, strict=True):
            sites.add_metric([state], count)
        yield sites
        yield _per_site("fedehr_update_norm", "L2 norm of each site's update (site weights "
                        "minus global weights) in the last round.", last.get("update_norms"))
        yield _per_site("fedehr_site_train_loss", "Mean DP training loss each site reported "
                        "in the last round.", last.get("train_loss"))
        yield _per_site("fedehr_site_train_seconds", "Local training time each site "
                        "reported in the last round.", last.get("site_train_seconds"))

    def _losses_and_privacy(self, rounds: list[dict]) -> Iterator[Metric]:
        with_anchor = [r for r in rounds if r.get("anchor_loss") is not None]
        if with_anchor:
            yield _gauge("fedehr_anchor_loss", "Loss of the global model on the public "
                         "anchor's held-out patients after the last round.",
                         with_anchor[-1]["anchor_loss"])
        with_eval = [r for r in rounds if r.get("site_eval_loss")]
        if with_eval:
            yield _per_site("fedehr_site_eval_loss", "Held-out loss of the global model at "
                            "each site after the last round.", with_eval[-1]["site_eval_loss"])
        with_epsilon = [r for r in rounds if r.get("epsilon")]
        if with_epsilon:
            yield _per_site("fedehr_site_epsilon", "Cumulative epsilon each site's privacy "
                            "ledger reported with its last accepted update.",
                            with_epsilon[-1]["epsilon"])

    def _pulls(self) -> Iterator[Metric]:
        if self.audit_path is None:
            return
        pulls = CounterMetricFamily("fedehr_registry_pulls", "Checkpoint pulls served by the "
                                    "registry, by researcher and whether the transfer "
                                    "completed.", labels=["researcher", "complete"])
        sent = CounterMetricFamily("fedehr_registry_pull_bytes", "Checkpoint bytes the "
                                   "registry sent to researchers.", labels=["researcher"])
        counts, volume = Counter(), Counter()
        for line in _audit_lines(self.audit_path):
            if line.get("event") == "pull":
                who = str(line.get("who"))
                counts[who, str(bool(line.get("complete", True))).lower()] += 1
                volume[who] += int(line.get("bytes") or 0)
        for (who, complete), count in sorted(counts.items()):
            pulls.add_metric([who, complete], count)
        for who, count in sorted(volume.items()):
            sent.add_metric([who], count)
        yield pulls
        yield sent

    def _checkpoints(self) -> int:
        folder = self.workdir / "checkpoints"
        if not folder.is_dir():
            return 0
        return sum(1 for p in folder.iterdir() if p.is_dir() and ROUND_DIR.match(p.name))


def _audit_lines(path: Path) -> list[dict]:
    try:
        return audit.read(path)
    except audit.AuditError:  # no audit log yet: nothing pulled
        return []


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _per_site(name: str, documentation: str, values: dict | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["site"])
    for site, value in sorted((values or {}).items()):
        family.add_metric([str(site)], float(value))
    return family
