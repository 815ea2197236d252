"""A fresh consortium PKI folder per test (EC P-384 key generation takes milliseconds)."""

from __future__ import annotations

import pytest

from fedehr.shared.pki import init_ca


@pytest.fixture
def pki_dir(tmp_path):
    root = tmp_path / "pki"
    init_ca(root, "Test Consortium CA")
    return root
