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
