"""The page on the planted test world of the clinical tests (tests/shared/clinical/planted.py:
alpha-procedure patients, even ids, always have a cardiac arrest one hour later)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedehr.shared.ui.app import create_app
from fedehr.shared.ui.workspace import Settings
from tests.shared.clinical import planted

QUESTION = "cardiac arrest within 1 day after alpha procedure"


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return planted.world(tmp_path_factory)


@pytest.fixture(scope="session")
def settings(world, tmp_path_factory) -> Settings:
    audit = tmp_path_factory.mktemp("ui-audit") / "audit.jsonl"
    return Settings(checkpoint=world.checkpoint, data=world.dataset.root, audit_log=audit,
                    user="dr-test", samples=8, explain_groups=4)


@pytest.fixture(scope="session")
def client(settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.fixture(scope="session")
def tampered_checkpoint(world, tmp_path_factory) -> Path:
    """A copy of the checkpoint whose weights changed after signing."""
    path = tmp_path_factory.mktemp("tampered") / "ckpt"
    shutil.copytree(world.checkpoint, path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def federated_checkpoint(world, tmp_path_factory) -> Path:
    """The planted model re-signed with a card as a federation writes it: hospitals, the
    privacy each spent, losses per round."""
    from fedehr.shared.checkpoint import ModelCard, generate_signing_key, save

    root = tmp_path_factory.mktemp("federated")
    history = [{"round": r, "anchor_loss": 3.0 - 0.5 * r,
                "site_eval_loss": {"hospital_a": 3.2 - 0.6 * r, "hospital_b": 3.1 - 0.5 * r},
                "participants": ["hospital_a", "hospital_b"]} for r in (1, 2, 3)]
    privacy = {site: {"epsilon": eps, "delta": 1e-5, "accountant": "rdp", "epsilon_budget": 8.0}
               for site, eps in (("hospital_a", 2.41), ("hospital_b", 3.07))}
    card = ModelCard(architecture=world.model.config.to_dict(), rounds=3, privacy=privacy,
                     training={"federation": "planted-consortium", "strategy": "fedavg",
                               "history": history, "audit_head": "ab" * 32})
    save(root / "ckpt", world.model, world.vocab, card, generate_signing_key(root / "k.key"))
    return root / "ckpt"


@pytest.fixture(scope="session")
def odd_client(settings, odd_dataset) -> TestClient:
    from dataclasses import replace

    return TestClient(create_app(replace(settings, data=odd_dataset)))


@pytest.fixture(scope="session")
def odd_dataset(world, tmp_path_factory) -> Path:
    """The planted data with codes the model never saw: a stroke (outside the vocabulary)
    and ZORB in two code families (an ambiguous concept); and the two procedures in two
    code families, so that "procedure" is ambiguous between concepts patients have."""
    import polars as pl

    root = tmp_path_factory.mktemp("odd") / "meds"
    shutil.copytree(world.dataset.root, root)
    codes_path = root / "metadata" / "codes.parquet"
    codes = pl.read_parquet(codes_path)
    extra = pl.DataFrame({"code": ["EVENT//STROKE", "FOO//ZORB", "BAR//ZORB"],
                          "description": ["Stroke", "Foo thing", "Bar thing"]})
    families = {"PROC//ALPHA": ["SNOMEDCT/1001"], "PROC//BETA": ["SNOMEDCT/1002"]}
    codes = codes.with_columns(pl.col("code").replace_strict(
        families, default=None, return_dtype=pl.List(pl.String)).alias("parent_codes"))
    pl.concat([codes, extra.cast(codes.select("code", "description").schema)],
              how="diagonal_relaxed").write_parquet(codes_path)
    return root


def answered(client: TestClient, location: str, timeout: float = 30.0) -> dict:
    """Wait for a job the page started; its final status."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"{location}/status").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"{location} still running after {timeout} s")


def write_evaluation(folder: Path, checkpoint: Path) -> Path:
    """An evaluation report as `fedehr model evaluate --out` leaves it: results.json from
    EvaluationResult.to_dict, report.md linking one plot, the plot, and another file."""
    import json

    import numpy as np

    from fedehr.shared.clinical.evaluate import EvaluationResult, MethodResult, TaskResult
    from fedehr.shared.clinical.metrics import Scores

    def method(name, k, *aurocs):
        runs = [Scores(n=24, positives=3, auroc=a, auprc=0.4, ece=0.1, brier=0.1)
                for a in aurocs]
        return MethodResult(name, k, runs, np.zeros(1), np.zeros(1))

    task = TaskResult("mortality", "In-hospital mortality", 224, 24, 19, 3, [
        method("zero-shot", None, 0.5), method("probe", 16, 0.6, 0.8),
        method("counts", "all", float("nan"))], notes=["few positives"])
    result = EvaluationResult(str(folder), str(checkpoint), {"split": "held_out",
                              "ks": [16, "all"], "seeds": 2, "zero_shot_samples": 2}, [task])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result.to_dict()))
    (folder / "report.md").write_text("# fedehr model evaluate\n\n"
                                      "![In-hospital mortality roc](mortality-roc.png)\n")
    (folder / "mortality-roc.png").write_bytes(_grey_png(160, 120))
    (folder / "notes.txt").write_text("not a plot")
    return folder


def _grey_png(width: int, height: int) -> bytes:
    """A valid plain PNG standing in for a plot (matplotlib would cost seconds)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + b"\xe8" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))
