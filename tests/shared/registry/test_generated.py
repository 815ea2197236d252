"""The checked-in registry_pb2*.py are what generate.sh makes from registry.proto today."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "registry"


def test_generated_code_is_current(tmp_path):
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")
    from importlib.metadata import version

    made_with = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'",
                          (SOURCE / "registry_pb2_grpc.py").read_text()).group(1)
    if version("grpcio-tools") != made_with:
        pytest.skip(f"grpcio-tools {version('grpcio-tools')} installed; the code was made "
                    f"with {made_with}")
    assert grpc_tools is not None
    subprocess.run(["bash", str(SOURCE / "generate.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    for name in ("registry_pb2.py", "registry_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (SOURCE / name).read_text(), (
            f"{name} is stale: run shared/registry/generate.sh")


def test_the_messages_carry_what_a_resumable_pull_needs():
    from fedehr.shared.registry import registry_pb2

    request = registry_pb2.PullCheckpointRequest(round="latest", offset=123)
    assert registry_pb2.PullCheckpointRequest.FromString(request.SerializeToString()) == request
    assert {"offset", "data", "sha256", "last", "total_size"} <= {
        f.name for f in registry_pb2.CheckpointChunk.DESCRIPTOR.fields}
