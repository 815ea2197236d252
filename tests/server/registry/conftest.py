from __future__ import annotations

import pytest

from fedehr.server.registry.service import RegistryService, build_server
from tests.shared.registry.consortium import Consortium, make_pki, save_checkpoint


@pytest.fixture
def consortium(tmp_path):
    """A PKI, a workdir with rounds 1 and 2, and a registry serving it on loopback."""
    pki = make_pki(tmp_path / "pki")
    workdir = tmp_path / "fed"
    for rnd in (1, 2):
        save_checkpoint(workdir / "checkpoints" / f"round-{rnd:04d}", pki, rounds=rnd, seed=rnd)
    world = Consortium(pki, workdir)
    service = RegistryService(workdir, pki, chunk_size=1024,
                              on_pull=lambda *a: world.pulls.append(a))
    server, port = build_server(service, host="127.0.0.1", port=0)
    server.start()
    world.target = f"localhost:{port}"
    world.service = service
    yield world
    server.stop(grace=None)
