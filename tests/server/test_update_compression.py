"""Updates sent as float16 differences: what the server rebuilds, and what it costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from flwr.app import ArrayRecord

from fedehr.server.config import load_federation_config
from fedehr.shared import messages as M
from fedehr.shared.data.anchor import fetch_anchor
from fedehr.shared.errors import ConfigError
from fedehr.shared.packed_arrays import pack, unpack, unpack_torch
from fedehr.shared.update_compression import FLOAT16, decode, encode, for_download, received

from .test_streaming import SHAPES, ArrivingGrid, Model, _federation, _sites, _train, _update

pytestmark = pytest.mark.usefixtures("in_a_run")  # tests/server/conftest.py


@pytest.fixture(scope="module")
def anchor_root():
    return fetch_anchor()


def _weights(seed: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in _update(seed, scale=1.0).items()}


def test_decode_gives_the_trained_weights_to_float16s_precision_of_the_difference():
    start, step = _weights(0), _weights(1)
    trained = {k: start[k] + 0.01 * step[k] for k in start}  # an update of 1% of a weight
    sent = encode(trained, start)
    assert {v.dtype for v in sent.values()} == {torch.float16}
    rebuilt = decode(unpack(pack(sent)), {k: v.numpy() for k, v in start.items()})
    for name, weights in trained.items():
        error = np.abs(rebuilt[name] - weights.numpy())
        difference = np.abs((weights - start[name]).numpy())
        assert rebuilt[name].dtype == np.float32
        assert (error <= difference * 2.0 ** -11 + 1e-7).all()  # half a float16 ulp


def test_integer_tensors_and_unknown_names_pass_unchanged():
    start = {"w": torch.zeros(3), "steps": torch.tensor([7])}
    sent = encode({"w": torch.ones(3), "steps": torch.tensor([9])}, start)
    assert sent["steps"].dtype == torch.int64 and int(sent["steps"]) == 9
    arrays = {"w": np.ones(3, np.float16), "extra": np.ones(2)}
    rebuilt = decode(arrays, {"w": np.zeros(3, np.float32)})
    assert rebuilt["extra"].tolist() == [1.0, 1.0] and rebuilt["w"].dtype == np.float32
    assert not arrays  # read as it is rebuilt: one copy at a time


class CompressingGrid(ArrivingGrid):
    """Sites that answer with float16 differences from the global model (zeros here)."""

    def _reply(self, mid):
        reply = super()._reply(mid)
        if reply.content is not None:
            start = {k: torch.zeros(s) for k, s in SHAPES.items()}
            trained = unpack_torch(reply.content[M.ARRAYS])
            reply.content[M.ARRAYS] = pack(encode(trained, start))
            reply.content[M.METRICS][M.UPDATE_FLOAT16_DELTA] = 1.0
        return reply


def test_a_round_of_float16_updates_is_the_fedavg_of_the_rebuilt_weights_at_half_the_bytes(
        tmp_path, anchor_root):
    plain = _train(_federation(tmp_path / "plain", anchor_root), ArrivingGrid(_sites(3)),
                   plain_model := Model())
    packed = _train(_federation(tmp_path / "f16", anchor_root), CompressingGrid(_sites(3)),
                    packed_model := Model())
    assert packed.bytes_in == plain.bytes_in / 2
    assert sorted(packed.site_metrics) == sorted(plain.site_metrics)
    for name, value in plain_model.state_dict().items():
        # the updates are the weights here (start 0), all below 0.0625 in size: float16
        # rounds each by at most half its step there, 2**-15; so does their weighted mean
        np.testing.assert_allclose(packed_model.state_dict()[name], value, rtol=0, atol=2**-15)
    assert packed.update_norms == pytest.approx(plain.update_norms, rel=1e-3)


def _config(tmp_path, **extra):
    raw = {"name": "t", "workdir": "w", "superlink": {"insecure": True},
           "sites": ["a", "b"], "min_sites": 2, **extra}
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_federation_config(path)


def test_the_model_downloads_in_float16_and_the_site_trains_on_a_float32_copy():
    state = {"w": torch.tensor([1.0, 1 / 3]), "steps": torch.tensor([7])}
    sent = for_download(state, FLOAT16)
    assert {k: v.dtype.name for k, v in unpack(_copy(sent)).items()} == {
        "w": "float16", "steps": "int64"}
    assert unpack(for_download(state, "none"))["w"].dtype == np.float32
    copy = received(unpack_torch(sent))
    assert copy["w"].dtype == torch.float32 and copy["steps"].tolist() == [7]
    torch.testing.assert_close(copy["w"], state["w"], rtol=2**-11, atol=0)


def _copy(record: ArrayRecord) -> ArrayRecord:
    return ArrayRecord(dict(record.items()))  # unpack empties what it reads


class RecordingGrid(ArrivingGrid):
    """Also keeps the dtypes of the model each pushed message carries."""

    def push_messages(self, messages):
        messages = list(messages)
        self.pushed = [{v.dtype.name for v in unpack(_copy(m.content[M.ARRAYS])).values()}
                       for m in messages]
        return super().push_messages(messages)


def test_a_float16_download_halves_the_bytes_out_and_fedadam_keeps_its_float32_start(
        tmp_path, anchor_root):
    plain = _train(_federation(tmp_path / "plain", anchor_root, strategy="fedadam"),
                   RecordingGrid(_sites(3)), Model())
    fed = _federation(tmp_path / "f16", anchor_root, strategy="fedadam")
    fed.cfg.local.download_compression = FLOAT16
    grid = RecordingGrid(_sites(3))
    packed = _train(fed, grid, Model())
    assert grid.pushed == [{"float16"}] * 3
    assert packed.bytes_out == plain.bytes_out / 2 > 0
    assert {a.dtype for a in fed.strategy.current_arrays.values()} == {np.dtype("float32")}


def test_config_takes_float16_refuses_other_names_and_secure_aggregation(tmp_path):
    assert _config(tmp_path, local={"update_compression": "float16"}) \
        .local.update_compression == "float16"
    with pytest.raises(ConfigError, match="none, float16"):
        _config(tmp_path, local={"update_compression": "gzip"})
    assert _config(tmp_path, local={"download_compression": "float16"}) \
        .local.download_compression == "float16"
    with pytest.raises(ConfigError, match="none, float16"):
        _config(tmp_path, local={"download_compression": "int8"})
    with pytest.raises(ConfigError, match="quantises"):
        _config(tmp_path, secure_aggregation=True, local={"update_compression": "float16"})
