"""A model's tensors travel as one Flower Array per dtype and come back whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.packed_arrays import (
    LAYOUT,
    MalformedArrays,
    pack,
    payload_bytes,
    unpack,
    unpack_torch,
)


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.randn(3, 4), "half": torch.randn(5).half(), "steps": torch.tensor([7, 9]),
            "b": torch.randn(4)}


def test_names_order_shapes_dtypes_and_values_come_back_and_the_record_is_emptied():
    state = _state()
    record = pack(state)
    arrays = unpack(record)
    assert list(arrays) == list(state) and len(record) == 0
    for name, tensor in state.items():
        assert arrays[name].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(arrays[name], tensor.numpy())


def test_a_model_is_one_array_per_dtype_plus_its_layout_however_many_tensors():
    model = EHRModel(ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_len=24))
    state = model.state_dict()
    record = pack(state)
    assert len(state) > 20 and len(record) == 2  # float32 + layout
    assert payload_bytes(record) == sum(t.numel() * t.element_size() for t in state.values())
    rebuilt = unpack_torch(record)
    for name, tensor in state.items():
        torch.testing.assert_close(rebuilt[name], tensor, rtol=0, atol=0)


def test_a_site_gets_writable_tensors_of_its_own():
    tensors = unpack_torch(pack({"w": torch.zeros(2)}))
    tensors["w"] += 1  # the site's trainer may change what it received in place
    assert tensors["w"].tolist() == [1.0, 1.0]


def test_a_record_of_one_array_per_tensor_is_read_as_it_is():
    record = ArrayRecord({"w": Array(np.ones(3, np.float32)), "b": Array(np.zeros(2))})
    arrays = unpack(record)
    assert arrays["w"].tolist() == [1.0] * 3 and arrays["b"].dtype == np.float64
    assert payload_bytes(ArrayRecord({"w": Array(np.ones(3, np.float32))})) == 12


def _with_layout(record: ArrayRecord, layout) -> ArrayRecord:
    record[LAYOUT] = Array(np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8))
    return record


@pytest.mark.parametrize(("layout", "named"), [
    ([["w", "float32", [3, 5]]], "packed/float32 holds 12 float32 values; its layout lists 15"),
    ([["w", "float32", [3, 4]], ["x", "float16", [2]]], "the layout lists dtypes"),
    ("not a layout", "unreadable layout"),
    ([["w", 5, [3, 4]]], "holds 12 float32 values; its layout lists 0"),
    ([["w", "float32", [-3, -4]]], "negative dimension"),
])
def test_a_layout_that_does_not_match_the_arrays_is_refused_naming_what_differs(layout, named):
    record = _with_layout(pack({"w": torch.zeros(3, 4)}), layout)
    with pytest.raises(MalformedArrays, match=named):
        unpack(record)


def test_a_packed_array_that_is_not_flat_numbers_is_refused():
    record = ArrayRecord({"packed/float32": Array(np.zeros((2, 2), np.float32))})
    with pytest.raises(MalformedArrays, match="not a flat array"):
        unpack(_with_layout(record, [["w", "float32", [4]]]))
