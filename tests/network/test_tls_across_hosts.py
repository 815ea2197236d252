"""TLS between hosts: a hospital dials the consortium's address, never loopback.

The SuperLink runs inside the `consortium` namespace bound to 10.77.0.1 with a
certificate issued by `fedehr pki server --host 10.77.0.1`; the site runs
inside `hospital_a`, where 10.77.0.1 is reachable only over its link. A good
certificate connects; a certificate for another address, an expired one and a
wrong port are refused, and the site says which. One hospital is enough here;
its daemon runs Flower's per-message ClientApp (no worker: nothing trains).
"""

from __future__ import annotations

import datetime as dt

import pytest

from fedehr.shared.pki import issue_server_cert

from .federation import NetworkFederation, wait_until

pytestmark = pytest.mark.e2e
ONE_SITE = {"min_sites": 1}


def _federation(network, root, hospitals, anchor) -> NetworkFederation:
    return NetworkFederation.create(network, root, hospitals[:1], anchor=anchor,
                                    federation=ONE_SITE)


@pytest.fixture(scope="module")
def joined(module_network, tmp_path_factory, hospitals, anchor):
    """`fedehr server start` on the consortium, `fedehr site start` on hospital_a, connected."""
    fed = _federation(module_network, tmp_path_factory.mktemp("joined"), hospitals, anchor)
    fed.start_server()
    fed.wait_connected("hospital_a", fed.start_site("hospital_a", isolation="subprocess"))
    return fed


@pytest.fixture
def federation(network, tmp_path, hospitals, anchor):
    return _federation(network, tmp_path / "fed", hospitals, anchor)


def test_site_on_its_own_host_joins_the_superlink_at_the_consortium_address(joined):
    assert f"its SuperNode is connected to {joined.superlink}" in \
        " ".join(joined.site_status("hospital_a").split())
    assert f"{joined.superlink} TLS certificate (CA matches) valid" in \
        joined.superlink_check("hospital_a")


def test_wrong_port_is_named_on_the_hospitals_side(joined):
    wrong = joined.port + 1
    joined.set_site("hospital_a", superlink=f"10.77.0.1:{wrong}")
    try:
        line = joined.superlink_check("hospital_a")
    finally:
        joined.set_site("hospital_a", superlink=joined.superlink)
    assert line.startswith("red")
    assert f"10.77.0.1 refused a connection to port {wrong}: nothing listens there" in line


def test_certificate_for_another_address_stops_the_site_naming_the_mismatch(federation):
    federation.issue_server_cert("10.77.9.9")  # the operator typed the wrong address
    federation.start_superlink()
    site = federation.start_site("hospital_a", isolation="subprocess")
    wait_until(lambda: site.poll() is not None, 120, None, federation.site_log("hospital_a"),
               "the site daemon to refuse the certificate")
    said = " ".join(federation.site_log("hospital_a").read_text().split())
    assert site.returncode != 0
    assert "the SuperLink certificate does not name 10.77.0.1" in said
    assert "fedehr pki server --host 10.77.0.1 --force" in said


def test_expired_certificate_is_refused_naming_the_expiry(federation):
    last_week = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    issue_server_cert(federation.root / "pki", ["10.77.0.1"], force=True, days=1,
                      valid_from=last_week)
    federation.start_superlink()
    line = federation.superlink_check("hospital_a")
    assert line.startswith("red")
    assert "the SuperLink certificate at 10.77.0.1 has expired" in line
