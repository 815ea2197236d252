from __future__ import annotations

import pytest

from tests.shared.registry.consortium import make_pki, save_checkpoint


@pytest.fixture
def pki_dir(tmp_path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
def checkpoint(tmp_path, pki_dir):
    save_checkpoint(tmp_path / "ckpt", pki_dir)
    return tmp_path / "ckpt"
