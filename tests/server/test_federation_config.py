"""federation.yaml settings that are checked before anything starts."""

from __future__ import annotations

import pytest

from fedehr.server.config import FederationConfig, SuperLinkConfig


def test_server_threads_default_to_one_and_a_nonsense_count_is_refused(tmp_path):
    cfg = FederationConfig(name="t", workdir=tmp_path, superlink=SuperLinkConfig(insecure=True))
    cfg.validate()
    assert cfg.threads == 1  # shared cores: two threads slowed the warm start 1.5-10x
    cfg.threads = 0
    with pytest.raises(ValueError, match="threads: must be between 1"):
        cfg.validate()


def test_a_warm_start_that_never_measures_its_tuning_loss_is_refused(tmp_path):
    from fedehr.server.config import WarmStartSpec

    cfg = FederationConfig(name="t", workdir=tmp_path, superlink=SuperLinkConfig(insecure=True),
                           warm_start=WarmStartSpec(eval_every=0))
    with pytest.raises(ValueError, match="warm_start.eval_every: must be at least 1"):
        cfg.validate()
