"""A TLS federation of three hospitals, end to end, with real Flower processes.

One run serves every test of this module: hospital_a carries planted canary
records, hospital_c sends a NaN update in every round (the tap ClientApp),
and a fourth hospital with an unregistered key tries to join. The sites send
their updates as float16 differences (local.update_compression) and receive the
model in float16 (local.download_compression), and mix four public anchor windows
into every DP-SGD batch (local.anchor_per_step). The server's
and the sites' Prometheus endpoints are on, and are scraped after the run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedehr.client.privacy import PrivacyLedger
from fedehr.server import runs
from fedehr.server.local_federation import HospitalSpec, LocalFederation
from fedehr.shared import audit
from fedehr.shared import messages as M
from fedehr.shared.checkpoint import load, verify
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.pki import PKIPaths

from .conftest import FAST, TAP_APP

pytestmark = pytest.mark.e2e

CANARY_TEXT = "CANARY-3f9c2a71-note-text"
CANARY_CODE = "LAB//CANARY-CODE-77//mg/dL"
CANARY_SUBJECT = 987_654_321_012


def plant_canaries(src: Path, dest: Path) -> list[int]:
    """Copy a MEDS dataset and add a canary patient with a unique code and note text."""
    events = MEDSDataset.open(src).scan().collect()
    t0 = dt.datetime(2020, 5, 1, 8, 0)
    canary = pl.DataFrame({
        S.SUBJECT_ID: [CANARY_SUBJECT] * 4,
        S.TIME: [None, t0, t0 + dt.timedelta(hours=2), t0 + dt.timedelta(days=1)],
        S.CODE: ["GENDER//F", "HOSPITAL_ADMISSION//EMERGENCY//EMERGENCY_ROOM", CANARY_CODE,
                 "NOTE//DISCHARGE_SUMMARY"],
        S.NUMERIC_VALUE: [None, None, 4.2, None],
        S.TEXT_VALUE: [None, None, None, f"Patient {CANARY_SUBJECT}: {CANARY_TEXT}"],
    }, schema_overrides={S.NUMERIC_VALUE: pl.Float32})
    with MEDSWriter(dest, dataset_name="hospital_a", etl_name="canary") as writer:
        writer.add_events(pl.concat([events, canary], how="diagonal_relaxed"))
        writer.add_codes(MEDSDataset.open(src).codes()["code"].to_list())
    return events[S.SUBJECT_ID].unique().to_list() + [CANARY_SUBJECT]


@pytest.fixture(scope="module")
def federation(tmp_path_factory, hospitals, anchor):
    root = tmp_path_factory.mktemp("tls-federation")
    a, b, c = hospitals
    planted = HospitalSpec("hospital_a", root / "hospital_a-canary")
    subject_ids = plant_canaries(a.data, planted.data)
    outsider = HospitalSpec("hospital_d", b.data, registered=False)
    fed = LocalFederation.create(root, [planted, b, c, outsider], anchor=anchor,
                                 federation={**FAST, "rounds": 2, "min_sites": 2, "local": {
                                     **FAST["local"], "update_compression": "float16",
                                     "download_compression": "float16",
                                     "anchor_per_step": 4}},
                                 site={"training": {"threads": 1}}, metrics=True,
                                 site_env={"FEDEHR_TAP_DIR": str(root / "tap"),
                                           "FEDEHR_SABOTEUR": "hospital_c"})
    fed.clientapp = TAP_APP
    try:
        fed.start_server()
        fed.serve_metrics()
        fed.start_sites("hospital_a", "hospital_b", "hospital_c")
        fed.start_site("hospital_d", wait=False)
        outsider_exit = fed.site_exit_code("hospital_d", timeout=60)
        run_id = fed.launch()
        result = runs.watch(fed.config, run_id, console=_quiet(), timeout=900)
        yield {"fed": fed, "result": result, "outsider_exit": outsider_exit,
               "subject_ids": subject_ids, "tap": root / "tap"}
    finally:
        fed.stop()


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


def test_run_finishes_all_rounds_over_tls(federation):
    result = federation["result"]
    assert result["rounds"] == 2
    assert [e["round"] for e in result["history"]] == [0, 1, 2]


def test_unregistered_hospital_is_refused(federation):
    assert federation["outsider_exit"] not in (None, 0)
    log = (federation["fed"].root / "site-state" / "hospital_d.daemon.log").read_text()
    assert "refused" in log or "register" in log


def test_nan_update_is_rejected_and_the_run_goes_on(federation):
    for entry in federation["result"]["history"][1:]:
        assert "NaN" in entry["rejected"]["hospital_c"]
        assert entry["participants"] == ["hospital_a", "hospital_b"]


def test_final_checkpoint_is_signed_by_the_consortium_and_loads(federation):
    fed = federation["fed"]
    path = Path(federation["result"]["checkpoint"])
    card = verify(path, trusted_public_key=PKIPaths.of(fed.config.pki).signing_pub)
    assert card.rounds == 2
    assert set(card.privacy) == {"hospital_a", "hospital_b"}
    model, vocab, _ = load(path)
    assert model.config.vocab_size == len(vocab.tokens)


def test_site_budgets_hold_and_every_round_is_charged_once(federation):
    fed = federation["fed"]
    for name in ("hospital_a", "hospital_b"):
        ledger = PrivacyLedger.open(fed.root / "site-state" / name / "privacy-ledger.json",
                                    epsilon_budget=8.0, delta=1e-5)
        assert ledger.spent() <= ledger.epsilon_budget
        rounds = [e.round_id.split(":")[0] for e in ledger.entries if e.purpose == "dp-sgd"]
        assert sorted(rounds) == ["local/round-1", "local/round-2"], name
        card = federation["result"]["privacy"][name]
        assert card["epsilon"] == pytest.approx(ledger.spent(), rel=1e-6)


def test_nothing_record_level_leaves_a_site(federation):
    dumps = [p.read_text() for p in federation["tap"].glob("*.json")]
    kinds = {tuple(sorted(json.loads(d)["records"])) for d in dumps}
    assert len(dumps) >= 9 and ("config", "site") in kinds  # vocabulary releases tapped too
    text = "\n".join(dumps)
    assert CANARY_TEXT not in text and CANARY_CODE not in text
    for sid in federation["subject_ids"]:
        assert not re.search(rf"(?<![\d.]){sid}(?![\d])", text), sid


def test_updates_and_models_travel_as_float16_at_half_the_bytes(federation):
    # local.update_compression and download_compression: float16, through Flower's real
    # messages (the NaN update too); the sites train from their float32 copy of the model
    dumps = [json.loads(p.read_text()) for p in federation["tap"].glob("*.json")]
    updates = [d["records"][M.ARRAYS] for d in dumps if M.ARRAYS in d["records"]]
    assert len(updates) == 6  # 3 sites x 2 rounds
    assert {a["dtype"] for u in updates for a in u.values()} == {"float16"}
    for entry in federation["result"]["history"][1:]:
        assert entry["bytes_in"] == entry["bytes_out"]  # 3 updates in, 3 models out


def test_sites_mix_their_own_copy_of_the_anchor_into_training(federation):
    fed = federation["fed"]
    for name in ("hospital_a", "hospital_b"):
        assert any((fed.root / "site-state" / name / "anchor-cache").iterdir()), name


def _scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _healthz(url: str) -> int:
    with urllib.request.urlopen(url + "/healthz", timeout=30) as response:
        return response.status


def test_prometheus_metrics_of_server_and_site_match_the_run(federation):
    fed = federation["fed"]
    server, site_url = fed.monitor.url, fed.site_metrics_url("hospital_a")
    metrics, site = _scrape(server), _scrape(site_url)
    ledger = PrivacyLedger.open(fed.root / "site-state" / "hospital_a" / "privacy-ledger.json",
                                epsilon_budget=8.0, delta=1e-5)
    site_a = (("site", "hospital_a"),)
    nan_updates = sum("hospital_c" in e.get("rejected", {})
                      for e in federation["result"]["history"][1:])
    assert nan_updates == 2
    assert metrics[("fedehr_rounds_completed_total", ())] == 2
    assert metrics[("fedehr_updates_rejected_total", ())] == nan_updates
    assert metrics[("fedehr_checkpoints_published_total", ())] == 3  # warm start + 2 rounds
    assert metrics[("fedehr_run_phase", (("phase", "finished"),))] == 1
    assert metrics[("fedehr_site_epsilon", site_a)] == pytest.approx(ledger.spent(), rel=1e-6)
    assert site[("fedehr_site_epsilon_spent", site_a)] == pytest.approx(ledger.spent())
    assert site[("fedehr_site_epsilon_remaining", site_a)] == pytest.approx(ledger.remaining())
    dp_steps = sum(e.steps for e in ledger.entries if e.purpose == "dp-sgd")
    assert dp_steps > 0
    assert site[("fedehr_site_local_steps_total", site_a)] == dp_steps
    assert site[("fedehr_site_releases_total", (("kind", "dp-sgd"), *site_a))] == 2
    assert _healthz(server) == 200 and _healthz(site_url) == 200


def test_audit_logs_of_server_and_site_verify_and_record_each_round(federation):
    fed, result = federation["fed"], federation["result"]
    site_log = fed.root / "site-state" / "hospital_a" / "audit.jsonl"
    for path in (fed.config.audit_path, site_log):
        report = audit.verify(path)
        assert report.ok, f"{path}: {report.summary()}"
    lines = audit.read(fed.config.audit_path)
    assert [line["event"] for line in lines][:3] == ["run-start", "vocabulary", "warm-start"]
    assert lines[-1]["event"] == "run-end" and lines[-1]["ok"] is True
    rounds = [line for line in lines if line["event"] == "round"]
    assert [line["round"] for line in rounds] == [1, 2]
    for line, entry in zip(rounds, result["history"][1:], strict=True):
        assert line["participants"] == entry["participants"] == ["hospital_a", "hospital_b"]
        assert "hospital_c" in line["rejected"]
    final = Path(result["checkpoint"])
    assert rounds[-1]["sha256"]["model.safetensors"] == audit.sha256(
        (final / "model.safetensors").read_bytes())
    card = json.loads((final / "model_card.json").read_text())
    anchored = [audit.sha256(audit.canonical(line)) for line in lines]
    assert card["training"]["audit_head"] == anchored[lines.index(rounds[-1]) - 1]
    site_events = {line["event"] for line in audit.read(site_log)}
    assert {"release", "train", "evaluate"} <= site_events
