"""A model's tensors on the wire: one Flower Array per dtype, not one per tensor.

Flower 1.42 sends each Array of a message as separate objects (the array and
its chunks of at most 5 MB), and every object is one HTTPS request to the
SuperLink, which answers it with a few SQLite statements. Measured on the
2-core dev machine with the e2e federation (tiny model, 37 tensors, 78 objects
a message): three sites pulling at once waited about 120 ms per object, so
every download took 4-5 s per site and every upload as long again. Packed, a
message with the tiny model is 7 objects, the small one (24 MB) 11: per tensor
69 and 165, and a site's download 47x and 23x faster (benchmarks/model_transfer.py).

A packed ArrayRecord holds `packed/<dtype>`: the tensors of that dtype
flattened and concatenated in the order given, and `packed/layout`: UTF-8 JSON
[[name, dtype, shape], ...] as a uint8 array. A record without the layout is
read as Flower's one-array-per-tensor form.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from io import BytesIO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType

PREFIX = "packed/"
LAYOUT = PREFIX + "layout"


class MalformedArrays(ValueError):
    """A packed record whose layout does not match its arrays (a broken or hostile sender)."""


def pack(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """`state` as one flat array per dtype plus its layout."""
    layout, groups = [], {}
    for name, value in state.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) \
            else np.asarray(value)
        layout.append([name, array.dtype.name, list(array.shape)])
        groups.setdefault(array.dtype.name, []).append(array.reshape(-1))
    record = ArrayRecord()
    for dtype, parts in groups.items():
        record[PREFIX + dtype] = _flat_array(parts, np.dtype(dtype))
    record[LAYOUT] = Array(np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8))
    return record


def _flat_array(parts: list[np.ndarray], dtype: np.dtype) -> Array:
    """The concatenation of `parts` as a Flower Array, written straight into its .npy
    bytes: no concatenated copy beside them."""
    size = sum(part.size for part in parts)
    buffer = BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (size,)})
    for part in parts:
        buffer.write(np.ascontiguousarray(part).data)
    return Array(dtype=dtype.name, shape=(size,), stype=SType.NUMPY, data=buffer.getvalue())


def unpack(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named arrays of `record`, which is emptied as it is read.

    Each array is a read-only view into the record's serialised bytes: unpacking
    copies nothing, and the bytes live as long as any of the arrays.
    """
    if LAYOUT not in record:
        return {name: np.asarray(record.pop(name).numpy()) for name in list(record.keys())}
    layout = _read_layout(record.pop(LAYOUT))
    sizes = dict.fromkeys((dtype for _, dtype, _ in layout), 0)
    for _, dtype, shape in layout:
        sizes[dtype] += math.prod(shape)
    flat = {key.removeprefix(PREFIX): _flat_view(key, record.pop(key))
            for key in list(record.keys())}
    for dtype, array in flat.items():
        if array.dtype.name != dtype or array.size != sizes.get(dtype, -1):
            raise MalformedArrays(f"{PREFIX}{dtype} holds {array.size} {array.dtype.name} "
                                  f"values; its layout lists {sizes.get(dtype, 0)}")
    if set(flat) != set(sizes):
        raise MalformedArrays(f"the layout lists dtypes {sorted(sizes)}, the record holds "
                              f"{sorted(flat)}")
    named, offsets = {}, dict.fromkeys(flat, 0)
    for name, dtype, shape in layout:
        start = offsets[dtype]
        offsets[dtype] += math.prod(shape)
        named[name] = flat[dtype][start:offsets[dtype]].reshape(shape)
    return named


def _read_layout(array: Array) -> list[tuple[str, str, tuple[int, ...]]]:
    """[(name, dtype, shape)] from the layout array, or MalformedArrays."""
    try:
        layout = [(str(name), str(dtype), tuple(int(n) for n in shape))
                  for name, dtype, shape in json.loads(array.numpy().tobytes())]
    except (ValueError, TypeError) as exc:
        raise MalformedArrays(f"unreadable layout of packed arrays ({exc})") from None
    if any(n < 0 for _, _, shape in layout for n in shape):
        raise MalformedArrays("the layout of packed arrays has a negative dimension")
    return layout


def _flat_view(key: str, array: Array) -> np.ndarray:
    """A flat .npy Array's values as a read-only view of its bytes."""
    stream = BytesIO(array.data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except ValueError as exc:
        raise MalformedArrays(f"{key} is not a .npy array ({exc})") from None
    if len(shape) != 1 or fortran_order or dtype.hasobject:
        raise MalformedArrays(f"{key} is not a flat array of numbers")
    if len(array.data) - stream.tell() != shape[0] * dtype.itemsize:
        raise MalformedArrays(f"{key} holds {len(array.data) - stream.tell()} bytes of "
                              f"values; its header says {shape[0]} x {dtype.itemsize}")
    return np.frombuffer(array.data, dtype=dtype, count=shape[0], offset=stream.tell())


def unpack_torch(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """`unpack` as torch tensors, each its own writable copy."""
    return {name: torch.from_numpy(array.copy()) for name, array in unpack(record).items()}


def payload_bytes(record: ArrayRecord) -> int:
    """The bytes of the tensors a record carries, packed or not (the layout not counted)."""
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize
               for key, a in record.items() if key != LAYOUT)
