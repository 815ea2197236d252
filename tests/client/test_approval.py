"""A site runs a bundle only when site.yaml approves it, and only installed ClientApps."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedehr.client.approval import (
    SIGNATURE_KEY,
    BundleRefused,
    check_bundle,
    clientapp_component,
    fab_hash,
    installed_clientapp,
)
from fedehr.client.config import ApprovalConfig, SiteConfig
from fedehr.server.bundle import bundle_hash, sign_bundle, write_bundle
from fedehr.shared.pki.bundle_signing import create_bundle_key


def _site(tmp_path: Path, **approval) -> SiteConfig:
    return SiteConfig(name="hospital_a", data=tmp_path, state_dir=tmp_path / "state",
                      insecure=True, approval=ApprovalConfig(**approval))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A bundle as `fedehr run start` writes it, its FAB bytes, and a signing PKI."""
    from flwr.cli.build import build_fab_from_disk

    root = tmp_path_factory.mktemp("bundle")
    (root / "federation.yaml").write_text("name: x\n")
    folder = write_bundle(root / "bundle", root / "federation.yaml")
    _, pub = create_bundle_key(root / "pki")
    return {"folder": folder, "fab": build_fab_from_disk(folder), "pki": root / "pki",
            "pub": pub}


def test_the_bundle_hash_helper_gives_the_hash_flower_ships(shipped):
    assert bundle_hash(shipped["folder"]) == fab_hash(shipped["fab"])
    assert bundle_hash(shipped["folder"]) == bundle_hash(shipped["folder"])  # reproducible


def test_a_listed_hash_approves_the_bundle(shipped, tmp_path):
    site = _site(tmp_path, bundle_hashes=[fab_hash(shipped["fab"])])
    check_bundle(site, shipped["fab"], fab_hash(shipped["fab"]), {})


def test_a_consortium_signature_approves_the_bundle(shipped, tmp_path):
    digest, signature = sign_bundle(shipped["folder"], shipped["pki"])
    assert digest == fab_hash(shipped["fab"]) and signature
    site = _site(tmp_path, bundle_public_key=shipped["pub"])
    check_bundle(site, shipped["fab"], digest, {SIGNATURE_KEY: signature})


def test_a_signature_by_another_key_is_refused_naming_the_hash(shipped, tmp_path):
    _, other_signature = sign_bundle(shipped["folder"], _other_pki(tmp_path))
    site = _site(tmp_path, bundle_public_key=shipped["pub"])
    with pytest.raises(BundleRefused, match=fab_hash(shipped["fab"])) as info:
        check_bundle(site, shipped["fab"], "", {SIGNATURE_KEY: other_signature})
    assert "does not verify" in info.value.message


def test_an_unlisted_unsigned_bundle_is_refused(shipped, tmp_path):
    site = _site(tmp_path, bundle_hashes=["0" * 64])
    with pytest.raises(BundleRefused, match="not among the approved bundle hashes"):
        check_bundle(site, shipped["fab"], "", {})


def test_a_site_that_approves_nothing_runs_nothing(shipped, tmp_path):
    with pytest.raises(BundleRefused, match="approves no bundle"):
        check_bundle(_site(tmp_path), shipped["fab"], "", {})


def test_a_bundle_whose_content_differs_from_its_declared_hash_is_refused(shipped, tmp_path):
    site = _site(tmp_path, bundle_hashes=[fab_hash(shipped["fab"])])
    with pytest.raises(BundleRefused, match="does not match its declared hash"):
        check_bundle(site, shipped["fab"], "f" * 64, {})


def test_only_allowed_installed_clientapps_are_loaded(shipped, tmp_path):
    from flwr.cli.build import build_fab_from_disk
    from flwr.clientapp import ClientApp

    site = _site(tmp_path)
    assert clientapp_component(shipped["fab"]) == "fedehr.client.flower_app:app"
    app = installed_clientapp(site, "fedehr.client.flower_app:app", shipped["fab"])
    assert isinstance(app, ClientApp)
    other = write_bundle(tmp_path / "other", tmp_path / "f.yaml", clientapp="evil.module:app")
    fab = build_fab_from_disk(other)
    with pytest.raises(BundleRefused, match="asks for ClientApp 'evil.module:app'"):
        installed_clientapp(site, clientapp_component(fab), fab)


def test_an_allowed_clientapp_that_is_not_installed_is_refused_not_crashed(shipped, tmp_path):
    site = _site(tmp_path, clientapps=["fedehr.client.not_installed_app:app"])
    with pytest.raises(BundleRefused, match="allowed but not installed"):
        installed_clientapp(site, "fedehr.client.not_installed_app:app", shipped["fab"])


def _other_pki(tmp_path: Path) -> Path:
    create_bundle_key(tmp_path / "other-pki")
    return tmp_path / "other-pki"
