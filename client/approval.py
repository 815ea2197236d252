"""Which app bundles run at this site, and which code they run.

Two checks before any task touches the site's data:

1. The bundle is approved: its FAB hash (sha256 of the bundle Flower ships)
   is listed in site.yaml, or the run carries a signature over that hash by
   the consortium's bundle key named in site.yaml. The signature travels in the
   run config (`fedehr-bundle-signature`), which the operator controls; that is
   safe because it is verified here against the site's own trusted key, over
   the hash the site computes itself.
2. The bundle's `clientapp` component names a ClientApp the hospital has
   installed and allows (site.yaml `approval.clientapps`, by default fedehr's
   own). The bundle carries configuration only: the code that runs is the
   installed module, loaded by name from the site's environment, never from
   the bundle.
"""

from __future__ import annotations

import hashlib
import importlib

from fedehr.client.config import SiteConfig
from fedehr.shared.errors import FedEHRError

SIGNATURE_KEY = "fedehr-bundle-signature"  # run-config key set by `fedehr run start`


class BundleRefused(FedEHRError):
    """The site does not run this bundle; the reason names its hash."""


def fab_hash(fab: bytes) -> str:
    return hashlib.sha256(fab).hexdigest()


def check_bundle(site: SiteConfig, fab: bytes, declared_hash: str, run_config: dict) -> None:
    """Raise BundleRefused unless site.yaml approves this bundle (by hash or signature)."""
    digest = fab_hash(fab)
    if declared_hash and declared_hash != digest:
        raise BundleRefused(f"bundle {digest}: content does not match its declared hash "
                            f"{declared_hash}", where=site.name)
    approval = site.approval
    if digest in approval.bundle_hashes:
        return
    signature = run_config.get(SIGNATURE_KEY)
    if approval.bundle_public_key is not None and signature:
        from fedehr.shared.pki.bundle_signing import (
            load_bundle_public_key,
            verify_fab_signature,
        )

        if verify_fab_signature(load_bundle_public_key(approval.bundle_public_key), digest,
                                str(signature)):
            return
        why = "its signature does not verify with the site's bundle key"
    elif approval.bundle_public_key is not None:
        why = "it is not listed and carries no signature"
    elif approval.bundle_hashes:
        why = "it is not among the approved bundle hashes"
    else:
        why = "site.yaml approves no bundle"
    raise BundleRefused(f"bundle {digest} is not approved at this site: {why}",
                        where=f"{site.name} site.yaml approval",
                        fix=f"to approve it, add {digest} to approval.bundle_hashes or set "
                            "approval.bundle_public_key to the consortium's bundle.pub")


def clientapp_component(fab: bytes) -> str:
    """The `clientapp` component the bundle's pyproject.toml names."""
    from flwr.common.config import get_fab_config

    try:
        config = get_fab_config(fab)
        return str(config["tool"]["flwr"]["app"]["components"]["clientapp"])
    except (KeyError, ValueError, OSError) as exc:
        raise BundleRefused(f"bundle {fab_hash(fab)} has no readable clientapp component: "
                            f"{exc}", where="bundle pyproject.toml") from None


def installed_clientapp(site: SiteConfig, component: str, fab: bytes):
    """The installed ClientApp object for an allowed component, else BundleRefused.

    Imported by name from the site's own environment (lazily: an allowed module
    that is not installed is refused with a reason, not a crash).
    """
    if component not in site.approval.clientapps:
        raise BundleRefused(f"bundle {fab_hash(fab)} asks for ClientApp {component!r}, which "
                            f"this site does not run (allowed: "
                            f"{', '.join(site.approval.clientapps)})",
                            where=f"{site.name} site.yaml approval.clientapps")
    module_name, _, attr = component.partition(":")
    try:
        app = getattr(importlib.import_module(module_name), attr or "app")
    except (ImportError, AttributeError) as exc:
        raise BundleRefused(f"ClientApp {component!r} is allowed but not installed here: "
                            f"{exc}", where=site.name,
                            fix="install the fedehr version that provides it") from None
    return app
