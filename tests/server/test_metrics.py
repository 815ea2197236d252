"""The server's /metrics and /healthz, read from a federation workdir at scrape time."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedehr.server.metrics import ServerCollector
from fedehr.server.status import PHASES, StatusFile
from fedehr.shared.monitoring import MonitoringError, MonitoringServer


def _round(rnd: int, *, rejected: dict, norms: dict, seconds: float, bytes_in: int) -> dict:
    """A round entry as `Federation._round` writes it."""
    participants = sorted(set(norms) - set(rejected))
    return {"round": rnd, "anchor_loss": 5.0 - rnd,
            "site_eval_loss": {s: 4.0 - rnd / 10 for s in participants},
            "train_loss": {s: 4.5 - rnd / 10 for s in participants},
            "epsilon": {s: 1.5 * rnd for s in participants},
            "participants": participants, "rejected": rejected, "failed": [],
            "update_norms": norms, "bytes_in": bytes_in, "bytes_out": 3 * 1000,
            "aggregation_seconds": 0.25 * rnd, "seconds": seconds, "train_seconds": seconds - 1,
            "site_train_seconds": {s: 2.0 for s in participants}}


ROUNDS = [
    _round(1, rejected={"hospital_c": "update has NaN values"},
           norms={"hospital_a": 1.5, "hospital_b": 2.5}, seconds=12.5, bytes_in=2000),
    _round(2, rejected={}, norms={"hospital_a": 0.5, "hospital_b": 0.75}, seconds=10.0,
           bytes_in=3000),
]
ROUNDS[1]["failed"] = ["node 7: timeout"]  # hospital_c's reply did not come back in round 2
ROUNDS[1]["late"] = ["hospital_d"]  # sent the round, no reply by the round timeout


@pytest.fixture
def workdir(tmp_path):
    status = StatusFile(tmp_path / "status.json")
    status.update(phase="training")
    status.add_round({"round": 0, "anchor_loss": 6.0, "warm_start": {"steps": 5},
                      "site_eval_loss": {"hospital_a": 5.5}, "sites": ["hospital_a"]})
    for entry in ROUNDS:
        status.add_round(entry)
    for rnd in range(3):
        (tmp_path / "checkpoints" / f"round-{rnd:04d}").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".round-0003.x1y2.staging").mkdir()  # a save in progress
    (tmp_path / "checkpoints" / "latest").write_text("round-0002\n")
    return tmp_path


@pytest.fixture
def served(workdir):
    with MonitoringServer([ServerCollector(workdir)], host="127.0.0.1", port=0) as server:
        yield server


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    return {"families": families, "samples": samples}


def value(scraped: dict, name: str, **labels) -> float:
    return scraped["samples"][(name, tuple(sorted(labels.items())))]


def test_counters_sum_the_rounds_of_the_status_file(served):
    m = scrape(served.url)
    assert value(m, "fedehr_rounds_completed_total") == len(ROUNDS)
    assert value(m, "fedehr_updates_rejected_total") == 1
    assert value(m, "fedehr_bytes_received_total") == sum(r["bytes_in"] for r in ROUNDS)
    assert value(m, "fedehr_bytes_sent_total") == sum(r["bytes_out"] for r in ROUNDS)


def test_counters_are_exposed_as_counters(served):
    families = scrape(served.url)["families"]
    for name in ("fedehr_rounds_completed", "fedehr_updates_rejected", "fedehr_bytes_received",
                 "fedehr_bytes_sent", "fedehr_checkpoints_published"):
        assert families[name].type == "counter", name
    assert families["fedehr_round_duration_seconds"].type == "gauge"


def test_last_round_gauges_describe_the_newest_round(served):
    m = scrape(served.url)
    last = ROUNDS[-1]
    assert value(m, "fedehr_round_duration_seconds") == last["seconds"]
    assert value(m, "fedehr_aggregation_seconds") == last["aggregation_seconds"]
    assert value(m, "fedehr_round_sites", state="participating") == 2
    assert value(m, "fedehr_round_sites", state="rejected") == 0
    assert value(m, "fedehr_round_sites", state="failed") == 1
    assert value(m, "fedehr_round_sites", state="late") == 1
    for site, norm in last["update_norms"].items():
        assert value(m, "fedehr_update_norm", site=site) == norm


def test_losses_and_epsilon_are_per_site_from_the_last_round(served):
    m = scrape(served.url)
    last = ROUNDS[-1]
    assert value(m, "fedehr_anchor_loss") == last["anchor_loss"]
    for site in last["participants"]:
        assert value(m, "fedehr_site_eval_loss", site=site) == last["site_eval_loss"][site]
        assert value(m, "fedehr_site_epsilon", site=site) == last["epsilon"][site]
        assert value(m, "fedehr_site_train_loss", site=site) == last["train_loss"][site]


def test_run_phase_marks_only_the_current_phase(served):
    m = scrape(served.url)
    phases = {p: value(m, "fedehr_run_phase", phase=p) for p in PHASES}
    assert phases.pop("training") == 1
    assert set(phases.values()) == {0}
    assert value(m, "fedehr_round") == 2


def test_checkpoints_count_round_folders_not_saves_in_progress(served):
    assert value(scrape(served.url), "fedehr_checkpoints_published_total") == 3


def test_metrics_are_read_at_scrape_time(served, workdir):
    assert value(scrape(served.url), "fedehr_rounds_completed_total") == 2
    status = json.loads((workdir / "status.json").read_text())
    status["rounds"].append({**ROUNDS[-1], "round": 3, "rejected": {"hospital_b": "norm"}})
    status["phase"] = "finished"
    (workdir / "status.json").write_text(json.dumps(status))
    m = scrape(served.url)
    assert value(m, "fedehr_rounds_completed_total") == 3
    assert value(m, "fedehr_updates_rejected_total") == 2
    assert value(m, "fedehr_run_phase", phase="finished") == 1


def test_a_workdir_without_a_run_exports_zero_counters(tmp_path):
    with MonitoringServer([ServerCollector(tmp_path)], host="127.0.0.1", port=0) as server:
        m = scrape(server.url)
    assert value(m, "fedehr_rounds_completed_total") == 0
    assert value(m, "fedehr_checkpoints_published_total") == 0
    assert "fedehr_round_duration_seconds" not in m["families"]
    assert all(value(m, "fedehr_run_phase", phase=p) == 0 for p in PHASES)


def _health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthz_follows_the_health_check(workdir):
    alive = {"superlink": True}
    with MonitoringServer([ServerCollector(workdir)], host="127.0.0.1", port=0,
                          health=lambda: alive["superlink"]) as server:
        assert _health(server.url) == (200, {"status": "ok", "service": "fedehr"})
        alive["superlink"] = False
        code, body = _health(server.url)
    assert code == 503 and body["status"] == "down"


def test_healthz_is_503_when_the_check_raises(workdir):
    def broken() -> bool:
        raise RuntimeError("no supervisor")

    with MonitoringServer([], host="127.0.0.1", port=0, health=broken) as server:
        assert _health(server.url)[0] == 503


def test_a_busy_port_is_a_one_line_error(workdir):
    with MonitoringServer([], host="127.0.0.1", port=0) as first:
        with pytest.raises(MonitoringError, match="metrics_port"):
            MonitoringServer([], host="127.0.0.1", port=first.port).start()


def test_stop_closes_the_port(workdir):
    server = MonitoringServer([ServerCollector(workdir)], host="127.0.0.1", port=0).start()
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/metrics", timeout=2)
