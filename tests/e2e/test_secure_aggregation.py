"""Secure aggregation (SecAgg+) end to end: 3 hospitals, 2 DP-SGD rounds, real Flower.

One run serves every test of this module. The hospitals run
`fedehr.client.secure_app` (its mods, handlers, DP-SGD and privacy ledgers;
`secure_dropout_app` only makes hospital_c refuse round 2 after the key
exchange, so the round must unmask without it); the server runs fedehr's own
ServerApp wrapped by `secagg_recorder`, which keeps every reply the
server-side code receives and everything SecAgg+ hands the strategy.

How the aggregate is checked against plain aggregation: DP noise differs
from run to run, so a second, plain run would train different updates.
Instead the plain FedAvg result is computed from the very updates the secure
run aggregated: each site stores its trained weights by round (that store is
what lets a site resend an update without spending budget twice), the global
weights of the round before are in the signed checkpoint, and the plain
weighted mean (weights: patients) of those site weights must equal the
secure round's checkpoint up to float32 rounding and SecAgg+'s quantization.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedehr.client.site_handlers import _arrays_digest
from fedehr.server import runs
from fedehr.shared import audit
from fedehr.shared.checkpoint.format import WEIGHTS

from .conftest import NO_NOTES, make_federation

pytestmark = pytest.mark.e2e

SITES = ("hospital_a", "hospital_b", "hospital_c")
RECORDER = "tests.e2e.secagg_recorder:app"
DROPOUT_APP = "tests.e2e.secure_dropout_app:app"
PARTICIPANTS = {1: list(SITES), 2: ["hospital_a", "hospital_b"]}  # hospital_c drops in round 2


@pytest.fixture(scope="module")
def secure(tmp_path_factory, hospitals, anchor):
    root = tmp_path_factory.mktemp("secure-federation")
    fed = make_federation(root, hospitals, anchor,
                          federation={**NO_NOTES, "rounds": 2, "min_sites": 2,
                                      "secure_aggregation": True},
                          # patient-weighted sums: what SecAgg+'s max_weight scaling is for
                          site={"privacy": {"public_counts": True}},
                          env={"FEDEHR_SECAGG_DROP": "hospital_c:2"})
    fed.clientapp = DROPOUT_APP
    fed.serverapp = RECORDER
    try:
        fed.start_all()
        run_id = fed.launch()
        from rich.console import Console

        result = runs.watch(fed.config, run_id, console=Console(quiet=True), timeout=600)
        yield {"fed": fed, "result": result, "workdir": fed.config.workdir,
               "record": fed.config.workdir / "secagg-record"}
    finally:
        fed.stop()


def _weights(workdir: Path, rnd: int) -> dict[str, np.ndarray]:
    """A round's global weights, in the model's own order (that of SecAgg+'s vectors)."""
    from fedehr.shared.checkpoint import load

    path = workdir / "checkpoints" / f"round-{rnd:04d}"
    model, _, _ = load(path)
    stored = load_file(str(path / WEIGHTS))
    return {name: stored[name] for name in model.state_dict()}


def _site_round(fed, site: str, rnd: int, start: dict[str, np.ndarray]
                ) -> tuple[dict[str, np.ndarray], float]:
    """The weights `site` trained in round `rnd` from `start`, and its patients (its store)."""
    import torch

    digest = _arrays_digest({k: torch.from_numpy(v) for k, v in start.items()})
    key = f"{fed.config.name}/round-{rnd}:{digest}"
    stem = hashlib.sha256(key.encode()).hexdigest()[:24]
    replies = fed.root / "site-state" / site / "replies"
    metrics = json.loads((replies / f"{stem}.json").read_text())
    return load_file(str(replies / f"{stem}.safetensors")), float(metrics["num-examples"])


def _updates(secure, rnd: int) -> dict[str, tuple[dict[str, np.ndarray], float]]:
    start = _weights(secure["workdir"], rnd - 1)
    out = {}
    for site in PARTICIPANTS[rnd]:
        trained, patients = _site_round(secure["fed"], site, rnd, start)
        out[site] = ({k: trained[k].astype(np.float64) - start[k].astype(np.float64)
                      for k in start}, patients)
    return out


def test_secure_run_of_three_sites_finishes_two_dp_rounds(secure):
    result = secure["result"]
    assert result["rounds"] == 2
    for entry in result["history"][1:]:
        assert entry["participants"] == PARTICIPANTS[entry["round"]]
        assert entry["rejected"] == {}
        assert entry["secure_aggregation"]["protocol"] == "SecAgg+"
        assert len(entry["secure_aggregation"]["stage_seconds"]) == 4
    assert result["history"][1]["failed"] == []
    (reason,) = result["history"][2]["failed"]
    assert "hospital_c" in reason and "drops out" in reason
    for site in SITES:
        privacy = result["privacy"][site]
        assert 0 < privacy["epsilon"] <= privacy["epsilon_budget"]


def test_each_site_ledger_is_charged_once_per_round_it_trained(secure):
    from fedehr.client.privacy import PrivacyLedger

    for site in SITES:
        ledger = PrivacyLedger.open(secure["fed"].root / "site-state" / site /
                                    "privacy-ledger.json", epsilon_budget=8.0, delta=1e-5)
        rounds = sorted(e.round_id.split(":")[0] for e in ledger.entries
                        if e.purpose == "dp-sgd")
        expected = [f"local/round-{r}" for r, sites in PARTICIPANTS.items() if site in sites]
        assert rounds == expected, site
        assert secure["result"]["privacy"][site]["epsilon"] == pytest.approx(ledger.spent())


def _tolerance(secure, rnd: int, updates, start) -> float:
    """SecAgg+'s worst quantization error for these sites, plus float32 storage rounding.

    Site i's values are scaled by patients_i / max_weight and quantized in steps of
    2 clip / Q, i.e. 2 clip max_weight / (Q patients_i) in its own units; the
    weighted mean of n such errors is at most n 2 clip max_weight / (Q total).
    """
    sa = secure["result"]["history"][rnd]["secure_aggregation"]
    total = sum(n for _, n in updates.values())
    quantization = (len(updates) * 2 * sa["clipping_range"] * sa["max_weight"]
                    / (sa["quantization_range"] * total))
    biggest = max(float(np.abs(w).max()) for w in start.values())
    return quantization + float(np.spacing(np.float32(biggest + 1)))


def test_secure_aggregate_equals_plain_fedavg_of_the_same_updates(secure):
    for rnd in (1, 2):
        start = _weights(secure["workdir"], rnd - 1)
        secure_weights = _weights(secure["workdir"], rnd)
        updates = _updates(secure, rnd)
        total = sum(n for _, n in updates.values())
        worst, scale = 0.0, 0.0
        for name, ref in start.items():
            plain = ref.astype(np.float64) + sum(n * u[name] for u, n in updates.values()) / total
            worst = max(worst, float(np.max(np.abs(secure_weights[name] - plain))))
            scale = max(scale, float(np.max(np.abs(plain - ref))))
        tolerance = _tolerance(secure, rnd, updates, start)
        print(f"round {rnd}: max |secure - plain| = {worst:.2e} (bound {tolerance:.2e}), "
              f"max |update| = {scale:.2e}")
        assert worst <= tolerance, (rnd, worst, tolerance)
        assert scale > 1000 * tolerance, (rnd, scale, tolerance)  # the rounds moved the model


def test_the_server_never_holds_an_individual_update(secure):
    record = secure["record"]
    entries = [json.loads(p.read_text()) for p in sorted(record.glob("reply-*.json"))]
    train = [e for e in entries if e["type"] == "train" and e["error"] is None]
    # round 1: 4 SecAgg+ exchanges x 3 sites; round 2: 3 + 3 + 2 + 2 (hospital_c refused)
    assert len(train) == 4 * 3 + 3 + 3 + 2 + 2
    # No float array of the model ever arrives in a training reply: the mod clears them.
    assert all(not any(a.startswith("array/") for a in e["arrays"]) for e in train)
    masked = [e for e in train if e["masked"]]
    assert len(masked) == 3 + 2
    for rnd in (1, 2):
        updates = _updates(secure, rnd)
        names = list(_weights(secure["workdir"], rnd - 1))
        flat = {s: np.concatenate([u[n].ravel() for n in names]) for s, (u, _) in updates.items()}
        mean_update = np.concatenate([
            (_weights(secure["workdir"], rnd)[n].astype(np.float64) -
             _weights(secure["workdir"], rnd - 1)[n].astype(np.float64)).ravel() for n in names])
        # What SecAgg+ handed the strategy: one weighted mean, the same for every site ...
        meta = json.loads((record / f"aggregate-fit-round{rnd}.json").read_text())
        n = len(PARTICIPANTS[rnd])
        assert (meta["results"], meta["distinct_parameter_objects"]) == (n, 1)
        assert (meta["failures"] > 0) == (n < 3)
        handed = np.load(record / f"aggregate-fit-round{rnd}.npz")
        per_result = [np.concatenate([handed[f"result{i}|{j:04d}"].ravel()
                                      for j in range(len(names))]) for i in range(n)]
        assert all(np.array_equal(per_result[0], r) for r in per_result[1:])
        tolerance = _tolerance(secure, rnd, updates, _weights(secure["workdir"], rnd - 1))
        assert np.max(np.abs(per_result[0] - mean_update)) <= tolerance
        # ... which is no site's own update.
        for site, update in flat.items():
            assert np.max(np.abs(per_result[0] - update)) > 100 * tolerance, site
    # Each masked vector looks uniformly random mod 2^32 and is uncorrelated with the update.
    for i, e in enumerate(masked):  # in arrival order: round 1's three, then round 2's two
        site, rnd = e["metrics"]["fitres.metrics"]["name"], 1 if i < 3 else 2
        data = np.load(record / f"reply-{e['n']:05d}.npz")
        vec = np.concatenate([data[k].ravel() for k in sorted(data.files)][1:]).astype(float)
        updates = _updates(secure, rnd)
        names = list(_weights(secure["workdir"], rnd - 1))
        own = np.concatenate([updates[site][0][n].ravel() for n in names])
        assert abs(np.corrcoef(vec, own)[0, 1]) < 0.02, site
        assert abs(vec.mean() / 2**31 - 1) < 0.01  # uniform on [0, 2^32)


def test_audit_log_says_updates_are_not_screened_and_verifies(secure):
    path = secure["workdir"] / "audit.jsonl"
    assert audit.verify(path).ok
    lines = audit.read(path)
    notice = [line for line in lines if line["event"] == "secure-aggregation"]
    assert len(notice) == 1 and "not screened" in notice[0]["screening"]
    rounds = [line for line in lines if line["event"] == "secure-round"]
    assert [line["round"] for line in rounds] == [1, 2]
    assert all(line["clipped_fraction"] == {s: 0.0 for s in PARTICIPANTS[line["round"]]}
               for line in rounds)
