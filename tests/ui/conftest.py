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
