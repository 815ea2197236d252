"""Privacy settings in site.yaml are required: no silent default for epsilon, delta, accountant."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from fedehr.client.cli import app
from fedehr.client.config import load_site_config
from fedehr.client.preflight import site_checks
from fedehr.shared.errors import ConfigError

PRIVACY = {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}


def _write(tmp_path, privacy: dict | None):
    raw = {"name": "hospital_a", "data": "meds", "state_dir": "state", "insecure": True}
    if privacy is not None:
        raw["privacy"] = privacy
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


@pytest.mark.parametrize(("missing", "suggested"), [
    ("epsilon", "epsilon: 8.0"), ("delta", "delta: 1.0e-5"), ("accountant", "accountant: rdp")])
def test_a_missing_privacy_setting_names_the_file_the_field_and_a_value(
        tmp_path, missing, suggested):
    config = _write(tmp_path, {k: v for k, v in PRIVACY.items() if k != missing})
    with pytest.raises(ConfigError) as caught:
        load_site_config(config)
    assert f"privacy.{missing}" in caught.value.message and str(config) == caught.value.where
    assert suggested in caught.value.fix


def test_a_site_yaml_without_a_privacy_section_fails_site_check(tmp_path):
    config = _write(tmp_path, None)
    (line,) = site_checks(config)
    assert line.level == "red" and "privacy.epsilon" in line.message
    result = CliRunner().invoke(app, ["check", "--config", str(config)])
    assert result.exit_code == 1 and "privacy.epsilon" in result.output
    started = CliRunner().invoke(app, ["start", "--config", str(config)])
    assert started.exit_code != 0 and "privacy.epsilon" in str(started.exception or "") + \
        started.output


def test_all_three_written_loads(tmp_path):
    assert load_site_config(_write(tmp_path, PRIVACY)).privacy.accountant == "rdp"
