"""Every path in federation.yaml and site.yaml is relative to the file that holds it,
never to the working directory (issue 17, defect 6; shared/config.py resolves them)."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from fedehr.client.config import SiteConfig, load_site_config
from fedehr.server.config import FederationConfig, load_federation_config

SITE_PATHS = ["data", "state_dir", "ca_certificate", "auth_key", "harmonisation",
              "privacy.noise_seed_file", "approval.bundle_public_key", "modalities.note_encoder",
              "anchor"]
FEDERATION_PATHS = ["workdir", "pki", "anchor", "vocabulary.candidates"]


def _path_fields(schema, prefix: str = "") -> list[str]:
    found = []
    for name, tp in typing.get_type_hints(schema).items():
        args = typing.get_args(tp) or (tp,)
        if any(dataclasses.is_dataclass(a) for a in args):
            found += _path_fields(next(a for a in args if dataclasses.is_dataclass(a)),
                                  f"{prefix}{name}.")
        elif Path in args:
            found.append(prefix + name)
    return found


def _nested(dotted: list[str], value: str, base: dict) -> dict:
    raw: dict = copy.deepcopy(base)
    for key in dotted:
        *parents, leaf = key.split(".")
        node = raw
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return raw


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_the_lists_below_name_every_path_field_of_both_schemas():
    assert sorted(_path_fields(SiteConfig)) == sorted(SITE_PATHS)
    assert sorted(_path_fields(FederationConfig)) == sorted(FEDERATION_PATHS)


@pytest.mark.parametrize(("loader", "keys", "required"), [
    (load_site_config, SITE_PATHS, {"name": "hospital_a", "privacy": {
        "epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}),
    (load_federation_config, FEDERATION_PATHS, {"name": "demo"}),
])
def test_relative_paths_resolve_against_the_file_not_the_working_directory(
        tmp_path, monkeypatch, loader, keys, required):
    folder = tmp_path / "configs" / "here"
    folder.mkdir(parents=True)
    config = folder / "file.yaml"
    config.write_text(yaml.safe_dump(_nested(keys, "../shared/thing", required)))
    monkeypatch.chdir(tmp_path)
    loaded = loader(Path("configs/here/file.yaml"))
    for key in keys:
        assert _get(loaded, key) == tmp_path / "configs" / "shared" / "thing", key
