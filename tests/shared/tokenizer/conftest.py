"""Fixtures of the tokenizer tests."""

from __future__ import annotations

import pytest

from fedehr.shared.data.dataset import MEDSDataset
from tests.shared.tokenizer.meds_builders import STANDARD_PARENTS, event_rows, write_meds


@pytest.fixture
def site_dataset(tmp_path) -> MEDSDataset:
    """A standard-coded site of 40 patients."""
    return write_meds(tmp_path / "site", event_rows(40), STANDARD_PARENTS)
