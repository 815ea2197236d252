"""The secure ClientApp's own pieces (its Flower path: tests/e2e/test_secure_aggregation.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedehr.client.secure_app import SecureRequestRefused, _named_tensors, clipped_fraction
from fedehr.shared import messages as M


def test_clipped_fraction_counts_values_beyond_the_bound():
    update = [np.array([0.0, 0.5, -2.0]), np.array([[1.0, -1.5]])]
    assert clipped_fraction(update, 1.0) == pytest.approx(2 / 5)
    assert clipped_fraction(update, 10.0) == 0.0


def test_parameters_are_named_in_the_order_the_server_sent():
    tensors = _named_tensors([np.ones(2, np.float32), np.zeros((1, 3), np.float32)],
                             {M.ARRAY_NAMES: json.dumps(["a.weight", "b.bias"])})
    assert list(tensors) == ["a.weight", "b.bias"]
    assert tuple(tensors["b.bias"].shape) == (1, 3)


def test_a_request_whose_names_do_not_match_its_arrays_is_refused():
    with pytest.raises(SecureRequestRefused, match="names 1 arrays but carries 2"):
        _named_tensors([np.ones(2), np.ones(2)], {M.ARRAY_NAMES: json.dumps(["a"])})
