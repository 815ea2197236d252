"""Device selection: auto finds what torch sees; a missing GPU is a clear error."""

from __future__ import annotations

import pytest
import torch

from fedehr.client.config import load_site_config
from fedehr.shared.errors import ConfigError, FedEHRError
from fedehr.shared.training.device import resolve_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_names_the_setting_and_the_fix():
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda:0", where="site.yaml training.device")
    assert "site.yaml training.device" in info.value.one_line()
    assert "site-cuda" in info.value.one_line()


def test_a_nonsense_device_is_refused():
    with pytest.raises(ConfigError, match="not a device|not supported"):
        resolve_device("tpu")


def test_site_yaml_rejects_a_bad_device_at_load(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("name: h\ndata: .\nstate_dir: s\nsuperlink: 127.0.0.1:1\ninsecure: true\n"
                    "training: {device: gpu0}\n")
    with pytest.raises(FedEHRError, match="training.device"):
        load_site_config(path)
