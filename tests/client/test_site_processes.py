"""site.yaml `training.processes`: how many CPU processes train one DP model."""

from __future__ import annotations

import pytest

from fedehr.client.config import SiteConfig, TrainingLimits


def _site(processes: int) -> SiteConfig:
    return SiteConfig(name="hospital_a", data="data", state_dir="state", insecure=True,
                      training=TrainingLimits(processes=processes))


def test_one_process_is_the_default():
    assert TrainingLimits().processes == 1


@pytest.mark.parametrize("processes", [0, -1, 65])
def test_a_process_count_out_of_range_is_refused_naming_the_field(processes):
    with pytest.raises(ValueError, match="training.processes"):
        _site(processes).validate()
