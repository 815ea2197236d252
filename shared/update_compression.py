"""Update compression: float16 on the wire, both ways.

Upload: federation.yaml `local.update_compression: float16` asks the sites to send
their update as float16 differences from the global model they received; the
site's reply says it did (`messages.UPDATE_FLOAT16_DELTA`), so a site that
ignores the request still sends plain float32 weights the server reads as before.
It halves the upload. It is applied to the weights the site releases after
DP-SGD's noise: post-processing, so the privacy guarantee is the same.
Differences, not weights: an update is small next to the weights, so float16's 11
significant bits lose about 2**-12 of it per weight, where rounding the weights
themselves would lose as much of each weight.

Download: `local.download_compression: float16` sends the global model itself in
float16 (half the download). The sites train from that rounded copy. With float16
updates too, the server adds the sites' changes to its own float32 weights, so the
rounding never accumulates over rounds; with float32 updates the sites' weights
come back whole and each round keeps one rounding of the model they started from
(about 2**-12 of each weight). The global model is public to the sites: no
privacy question.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedehr.shared.packed_arrays import pack

NONE, FLOAT16 = "none", "float16"
CHOICES = (NONE, FLOAT16)


def encode(trained: dict[str, torch.Tensor], start: dict[str, torch.Tensor]
           ) -> dict[str, torch.Tensor]:
    """(trained - start) in float16 for floating-point tensors; the others as they are."""
    return {name: (value - start[name]).to(torch.float16) if value.is_floating_point()
            else value for name, value in trained.items()}


def decode(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray]
           ) -> dict[str, np.ndarray]:
    """The site's weights again (reference + difference, in the reference's dtype).
    Names the reference lacks pass unchanged (screening then refuses the update,
    naming them)."""
    weights = {}
    for name in list(arrays):
        array, base = arrays.pop(name), reference.get(name)
        if base is not None and np.issubdtype(base.dtype, np.floating) \
                and array.shape == base.shape:
            array = base + array.astype(base.dtype)
        weights[name] = array
    return weights


def for_download(state: dict[str, torch.Tensor], how: str) -> ArrayRecord:
    """The global model as the server sends it, packed (shared.packed_arrays):
    floating-point tensors in float16 with `how` "float16", as they are with "none"."""
    if how == FLOAT16:
        state = {name: value.to(torch.float16) if value.is_floating_point() else value
                 for name, value in state.items()}
    return pack(state)


def received(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A site's float32 copy of the global model, whatever precision it travelled in."""
    return {name: value.to(torch.float32) if value.dtype == torch.float16 else value
            for name, value in state.items()}
