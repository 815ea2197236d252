"""The site daemon's view of the consortium link: lost, retried without end, back.

The daemon reads what Flower's SuperNode logs about its connection (flwr 1.42's
own lines, copied here) and keeps state_dir/consortium.json, which `fedehr site
status` and /metrics read. The real outage, across hosts, is
tests/network/test_consortium_outage.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from fedehr.client.cli import app
from fedehr.client.config import PrivacyConfig, SiteConfig, load_site_config
from fedehr.client.metrics import SiteCollector
from fedehr.client.supernode import Backoff, ConsortiumLink, LinkWatch, read_link
from fedehr.shared.errors import ConfigError
from fedehr.shared.monitoring import MonitoringServer

from .test_metrics import scrape, value

ADMITTED = "\x1b[92mINFO \x1b[0m:      SuperNode ID: 1234\n"
FAILED = "\x1b[93mWARNING \x1b[0m:  Connection attempt failed, retrying in {:.2f} seconds\n"
BACK = "\x1b[92mINFO \x1b[0m:      Connection successful after 95.31 seconds and 9 tries.\n"
CAUSE = "10.77.0.1 refused a connection to port 9093: nothing listens there"


class Clock:
    def __init__(self):
        self.now = time.time() - 3600  # the daemon's view began an hour ago

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def site(tmp_path) -> SiteConfig:
    return SiteConfig(name="hospital_a", data=tmp_path / "meds", state_dir=tmp_path / "state",
                      superlink="10.77.0.1:9093", insecure=True,
                      privacy=PrivacyConfig(epsilon=8.0, delta=1e-5))


@pytest.fixture
def watch(site):
    site.state_dir.mkdir(parents=True)
    log = site.state_dir / "supernode.log"
    log.write_text("an earlier SuperNode's lines\n" + ADMITTED)
    clock = Clock()
    watch = LinkWatch(site, log, clock=clock, probe=lambda: CAUSE)
    watch.clock_ = clock
    watch.new_supernode()
    return watch


def _log(watch, text: str) -> None:
    with open(watch.log, "a") as fh:
        fh.write(text)


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset():
    backoff = Backoff(5, 30)
    assert [backoff.next() for _ in range(5)] == [5, 10, 20, 30, 30]
    backoff.reset()
    assert backoff.next() == 5


def test_only_the_current_supernodes_admission_counts(watch):
    assert watch.poll() == [] and not watch.admitted  # the earlier SuperNode's line
    _log(watch, ADMITTED)
    watch.poll()
    assert watch.admitted
    assert read_link(watch.site.state_dir).reachable


def test_a_failed_try_marks_the_consortium_unreachable_naming_the_cause(watch):
    _log(watch, ADMITTED)
    watch.poll()
    watch.clock_.now += 60
    _log(watch, FAILED.format(1) + FAILED.format(2))
    said = watch.poll()
    link = read_link(watch.site.state_dir)
    assert (link.reachable, link.since, link.retry_seconds, link.cause) == \
        (False, watch.clock_.now, 2.0, CAUSE)
    assert said == [("warn", f"consortium unreachable: {CAUSE}; retrying with backoff (next "
                             "in 1 s), without end: the site rejoins by itself")]


def test_the_first_success_after_failures_marks_it_reachable_again(watch):
    _log(watch, ADMITTED + FAILED.format(20))
    watch.poll()
    watch.clock_.now += 95
    _log(watch, BACK)
    assert watch.poll() == [("print", "consortium 10.77.0.1:9093 reachable again after 95 s")]
    assert read_link(watch.site.state_dir).reachable


def test_a_half_written_line_is_read_once_complete(watch):
    _log(watch, FAILED.format(4)[:30])
    assert watch.poll() == []
    assert read_link(watch.site.state_dir) is None
    _log(watch, FAILED.format(4)[30:])
    watch.poll()
    assert read_link(watch.site.state_dir).retry_seconds == 4.0


STOPPED = ("\x1b[92mINFO \x1b[0m:      Run ID 141 is not in `RUNNING` status. Ignoring reply "
           "message 1aa0.\n")


def test_an_answer_that_is_no_success_line_still_ends_the_outage(watch):
    # a reply pushed through the outage; the run failed meanwhile (flwr 1.42's lines)
    _log(watch, ADMITTED + FAILED.format(12.18))
    watch.poll()
    watch.clock_.now += 70
    _log(watch, STOPPED)
    assert watch.poll() == [("print", "consortium 10.77.0.1:9093 reachable again after 70 s")]


def test_silence_past_the_next_tries_deadline_is_checked_with_a_dial(site, watch):
    answers = {"now": False}
    quiet = LinkWatch(site, watch.log, clock=watch.clock_,
                      probe=lambda: None if answers["now"] else CAUSE)
    quiet.new_supernode()
    _log(quiet, ADMITTED + FAILED.format(12))
    quiet.poll()
    watch.clock_.now += 12 + 30  # within the next try and its read timeout: no verdict
    answers["now"] = True
    assert quiet.poll() == [] and not read_link(site.state_dir).reachable
    watch.clock_.now += 10
    assert quiet.poll()[0][1].startswith("consortium 10.77.0.1:9093 reachable again")
    assert read_link(site.state_dir).reachable


def test_silence_with_a_dial_that_fails_stays_an_outage(watch):
    _log(watch, ADMITTED + FAILED.format(12))
    watch.poll()
    watch.clock_.now += 600
    assert watch.poll() == [] and not read_link(watch.site.state_dir).reachable


def test_a_supernode_gone_after_admission_is_an_outage_with_the_daemons_wait(watch):
    _log(watch, ADMITTED)
    watch.poll()
    rejoin = Backoff(5, 60)
    waits = [watch.supernode_gone("ERROR : killed", rejoin)[0] for _ in range(3)]
    link = read_link(watch.site.state_dir)
    assert waits == [5, 10, 20]  # a SuperLink that does not answer is backed off
    assert (link.reachable, link.retry_seconds, link.cause) == (False, 20, CAUSE)


def test_an_earlier_daemons_outage_is_forgotten_at_start(site, watch):
    watch.supernode_gone("", Backoff(5, 60))
    LinkWatch(site, watch.log)
    assert read_link(site.state_dir) is None


def _running_daemon(site_yaml, state, **pids):
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    state.mkdir(parents=True, exist_ok=True)
    (state / "site.pid").write_text(json.dumps({"daemon": daemon.pid, **pids}))
    return daemon


def _status_beside_a_daemon(site_yaml, state):
    """`fedehr site status` while a (stand-in) daemon holds the pid file."""
    daemon = _running_daemon(site_yaml, state)
    try:
        return CliRunner().invoke(app, ["status", "--config", str(site_yaml)],
                                  env={"COLUMNS": "300"})
    finally:
        daemon.kill()
        daemon.wait()


def test_status_says_since_when_the_consortium_is_unreachable_and_how_often_it_retries(
        tmp_path, watch):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hospital_a", "data": "meds", "state_dir": "state", "insecure": True,
        "superlink": "10.77.0.1:9093",
        "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}))
    watch.clock_.now = time.time() - 600
    _log(watch, ADMITTED + FAILED.format(20))
    watch.poll()
    result = _status_beside_a_daemon(config, tmp_path / "state")
    said = " ".join(result.output.split())
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(watch.clock_.now))
    assert f"consortium unreachable since {since} (for 10 min; {CAUSE}), retrying every " \
        "20 s" in said


def test_metrics_report_the_outage_and_the_wait(site, watch):
    _log(watch, ADMITTED)
    watch.poll()
    with MonitoringServer([SiteCollector(site)], host="127.0.0.1", port=0) as server:
        assert value(scrape(server.url), "fedehr_site_consortium_reachable") == 1
        _log(watch, FAILED.format(8))
        watch.poll()
        scraped = scrape(server.url)
    assert value(scraped, "fedehr_site_consortium_reachable") == 0
    assert value(scraped, "fedehr_site_consortium_retry_seconds") == 8
    assert 3590 < value(scraped, "fedehr_site_consortium_unreachable_seconds") < 3700


def test_no_consortium_metrics_before_the_daemons_first_contact(site):
    with MonitoringServer([SiteCollector(site)], host="127.0.0.1", port=0) as server:
        scraped = scrape(server.url)
    assert "fedehr_site_consortium_reachable" not in scraped["families"]


def test_reconnect_max_seconds_out_of_range_is_refused_naming_the_field(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hospital_a", "data": "meds", "state_dir": "state", "insecure": True,
        "reconnect_max_seconds": 1,
        "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}))
    with pytest.raises(ConfigError) as caught:
        load_site_config(config)
    assert "reconnect_max_seconds" in caught.value.one_line()


def test_what_the_current_supernode_logged_leaves_out_earlier_ones_and_colours(watch):
    _log(watch, "\x1b[91mERROR \x1b[0m:     Exit Code: 305\n"
                "[code: 2004] Failed to activate SuperNode.\n")
    said = watch.since_start()
    assert said == "ERROR :     Exit Code: 305\n[code: 2004] Failed to activate SuperNode.\n"


@pytest.mark.parametrize(("lasted", "said"), [(45, "for 45 s"), (150, "for 2 min"),
                                               (7300, "for 2 h")])
def test_the_outage_line_says_how_long_in_a_readable_unit(lasted, said):
    link = ConsortiumLink(False, 1_800_000_000.0, 20, CAUSE)
    assert f"({said}; {CAUSE}), retrying every 20 s" in link.outage_line(now=link.since + lasted)


def test_a_superlink_that_answers_but_refuses_is_named_with_flowers_latest_reason(site, watch):
    answering = LinkWatch(site, watch.log, clock=watch.clock_, probe=lambda: None)
    answering.new_supernode()
    _log(answering, ADMITTED)
    answering.poll()
    rejoin = Backoff(5, 60)
    wait, said = answering.supernode_gone("ERROR : killed", rejoin)
    again, _ = answering.supernode_gone("[code: 2004] Failed to activate SuperNode.", rejoin)
    link = read_link(site.state_dir)
    # only its heartbeat window (about a minute) holds the site out: no escalation
    assert (wait, again, link.retry_seconds) == (5, 5, 5)
    assert said[0][1].startswith("not back in the federation: the SuperLink at "
                                 "10.77.0.1:9093 answers but the SuperNode is not in")
    assert link.cause == ("the SuperLink at 10.77.0.1:9093 answers but the SuperNode is not "
                          "in: [code: 2004] Failed to activate SuperNode.")
    assert link.outage_line().startswith("not back in the federation since")


def test_status_shows_flowers_bracketed_code_as_written(tmp_path, site, watch):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hospital_a", "data": "meds", "state_dir": "state", "insecure": True,
        "superlink": "10.77.0.1:9093",
        "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}))
    answering = LinkWatch(site, watch.log, clock=watch.clock_, probe=lambda: None)
    answering.supernode_gone("[code: 2004] Failed to activate SuperNode.", Backoff(5, 60))
    result = _status_beside_a_daemon(config, tmp_path / "state")
    assert "not in: [code: 2004] Failed to activate SuperNode." in " ".join(result.output.split())
