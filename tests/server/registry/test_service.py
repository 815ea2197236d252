"""The registry over real mutual TLS on loopback: who may do what, and pulls that survive."""

from __future__ import annotations

import time

import pytest

from fedehr.server.registry.service import RegistryService, build_server
from fedehr.shared.atomic import OUTPUT_MARKER
from fedehr.shared.checkpoint import format as ckpt
from fedehr.shared.checkpoint import generate_signing_key, verify
from fedehr.shared.pki import revoke
from fedehr.shared.registry.channel import RegistryError
from fedehr.shared.registry.client import fetch_card, list_checkpoints, publish, withdraw
from fedehr.shared.registry.pull import partial_paths, pull
from tests.shared.registry.consortium import make_pki, save_checkpoint

CHUNK = 64 * 1024


class Interrupt(Exception):
    pass


def stop_after(n_bytes):
    def on_progress(held, total):
        if held >= n_bytes:
            raise Interrupt
    return on_progress


def pulls_reported(consortium, n: int, timeout: float = 10.0) -> list:
    """The registry reports a pull after the last chunk went out, so it may trail the client."""
    deadline = time.monotonic() + timeout
    while len(consortium.pulls) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return consortium.pulls


def test_pull_over_tls_gives_a_verified_checkpoint_and_reports_who_pulled(consortium, tmp_path):
    result = pull(consortium.target, out=tmp_path / "got", **consortium.pull_args())
    assert result.round == 2 and result.resumed_from == 0
    card = verify(tmp_path / "got", trusted_public_key=consortium.paths.signing_pub)
    assert card.rounds == 2
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == sorted(
        [*ckpt.SIGNED_FILES, ckpt.SIGNATURE, ckpt.SIGNER, OUTPUT_MARKER])
    assert not any(p.exists() for p in partial_paths(tmp_path / "got"))
    assert pulls_reported(consortium, 1) == [("alice", 2, result.size, True)]


def test_a_numbered_round_and_its_card_can_be_asked_for(consortium, tmp_path):
    rnd, card = fetch_card(consortium.creds("alice"), "1")
    assert rnd == 1 and card.rounds == 1
    assert pull(consortium.target, out=tmp_path / "r1", round="1",
                **consortium.pull_args()).card.rounds == 1
    assert [c.round for c in list_checkpoints(consortium.creds("alice"))] == [1, 2]


def test_no_client_certificate_is_refused(consortium, tmp_path):
    with pytest.raises(RegistryError, match="TLS handshake"):
        pull(consortium.target, out=tmp_path / "got", ca=consortium.paths.ca_cert,
             cert=None, key=None, timeout=10)
    assert not (tmp_path / "got").exists()
    assert not any(p.exists() for p in partial_paths(tmp_path / "got")), "no empty .partial"


def test_a_certificate_from_another_ca_is_refused(consortium, tmp_path):
    stranger = make_pki(tmp_path / "other-pki")
    with pytest.raises(RegistryError, match="TLS handshake"):
        pull(consortium.target, out=tmp_path / "got", ca=consortium.paths.ca_cert,
             cert=stranger / "researchers" / "alice.pem",
             key=stranger / "researchers" / "alice.key", timeout=10)


def test_a_revoked_certificate_is_refused_at_the_next_call_without_restart(consortium, tmp_path):
    assert list_checkpoints(consortium.creds("alice"))
    revoke(consortium.pki, "alice")
    with pytest.raises(RegistryError, match="alice .* has been revoked"):
        pull(consortium.target, out=tmp_path / "got", **consortium.pull_args())
    assert list_checkpoints(consortium.creds("olga"))  # others are unaffected


def test_a_deleted_revocation_list_readmits_no_revoked_researcher(consortium, tmp_path):
    revoke(consortium.pki, "alice")
    with pytest.raises(RegistryError, match="has been revoked"):
        list_checkpoints(consortium.creds("alice"))
    (consortium.pki / "revoked.json").unlink()
    with pytest.raises(RegistryError, match="revocation list"):
        pull(consortium.target, out=tmp_path / "got", **consortium.pull_args())
    assert not (tmp_path / "got").exists()


def test_a_rolled_back_revocation_list_readmits_no_revoked_researcher(consortium):
    revoke(consortium.pki, "alice")
    with pytest.raises(RegistryError, match="has been revoked"):
        list_checkpoints(consortium.creds("alice"))
    (consortium.pki / "revoked.json").write_text('{"version": 1, "revoked": []}')
    with pytest.raises(RegistryError, match="revocation list"):
        list_checkpoints(consortium.creds("alice"))


def test_an_expired_certificate_is_named_with_its_date_before_any_connection(
        consortium, tmp_path, monkeypatch):
    import datetime as dt

    from fedehr.shared.pki import certificates

    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=3 * 365)
    monkeypatch.setattr(certificates, "_now", lambda: then)
    cert, key = certificates.issue_client_cert(consortium.pki, "bob", role="researcher")
    monkeypatch.undo()
    with pytest.raises(RegistryError, match="client certificate of bob expired on") as err:
        pull(consortium.target, out=tmp_path / "got", ca=consortium.paths.ca_cert,
             cert=cert, key=key, timeout=10)
    assert err.value.where == str(cert)
    assert not any(p.exists() for p in partial_paths(tmp_path / "got"))


def test_a_researcher_can_neither_publish_nor_withdraw(consortium, tmp_path):
    save_checkpoint(tmp_path / "new", consortium.pki, rounds=5)
    with pytest.raises(RegistryError, match="Publish needs the role operator"):
        publish(consortium.creds("alice"), tmp_path / "new")
    with pytest.raises(RegistryError, match="Revoke needs the role operator"):
        withdraw(consortium.creds("alice"), 1)
    assert not (consortium.workdir / "checkpoints" / "round-0005").exists()


def test_an_operator_publishes_a_checkpoint_that_researchers_then_pull(consortium, tmp_path):
    save_checkpoint(tmp_path / "new", consortium.pki, rounds=5)
    assert publish(consortium.creds("olga"), tmp_path / "new") == 5
    result = pull(consortium.target, out=tmp_path / "got", **consortium.pull_args())
    assert result.round == 5 and result.card.rounds == 5
    with pytest.raises(RegistryError, match="round 5 exists"):
        publish(consortium.creds("olga"), tmp_path / "new")


def test_publish_refuses_a_checkpoint_not_signed_by_the_consortium(consortium, tmp_path):
    from fedehr.shared.registry import client

    save_checkpoint(tmp_path / "new", consortium.pki, rounds=6)
    other = generate_signing_key(tmp_path / "other.key")
    from fedehr.shared.checkpoint import signing

    hashes = {n: signing.sha256_file(tmp_path / "new" / n) for n in ckpt.SIGNED_FILES}
    (tmp_path / "new" / ckpt.SIGNATURE).write_bytes(signing.sign(other, hashes))
    (tmp_path / "new" / ckpt.SIGNER).write_bytes(signing.public_pem(other))
    with pytest.raises(RegistryError, match="untrusted key"):
        client.publish(consortium.creds("olga"), tmp_path / "new")
    assert not (consortium.workdir / "checkpoints" / "round-0006").exists()


def test_a_withdrawn_round_is_hidden_from_researchers(consortium, tmp_path):
    assert withdraw(consortium.creds("olga"), 2, "bad export") is False
    assert [c.round for c in list_checkpoints(consortium.creds("alice"))] == [1]
    assert pull(consortium.target, out=tmp_path / "got", **consortium.pull_args()).round == 1
    with pytest.raises(RegistryError, match="round 2 was withdrawn .*bad export"):
        pull(consortium.target, out=tmp_path / "r2", round="2", **consortium.pull_args())
    operator_view = list_checkpoints(consortium.creds("olga"))
    assert [(c.round, c.withdrawn) for c in operator_view] == [(1, False), (2, True)]


def test_an_interrupted_pull_resumes_from_the_partial_file(consortium, tmp_path):
    out = tmp_path / "got"
    with pytest.raises(Interrupt):
        pull(consortium.target, out=out, on_progress=stop_after(3 * 1024),
             **consortium.pull_args())
    partial, _ = partial_paths(out)
    held = partial.stat().st_size
    assert held >= 3 * 1024 and not out.exists()
    result = pull(consortium.target, out=out, **consortium.pull_args())
    assert result.resumed_from == held and result.received == result.size - held
    verify(out, trusted_public_key=consortium.paths.signing_pub)
    assert ("alice", 2, result.size - held, True) in pulls_reported(consortium, 2)


def test_a_resumed_pull_stays_on_its_round_when_a_newer_one_appears(consortium, tmp_path):
    out = tmp_path / "got"
    with pytest.raises(Interrupt):
        pull(consortium.target, out=out, on_progress=stop_after(1024), **consortium.pull_args())
    save_checkpoint(consortium.workdir / "checkpoints" / "round-0003", consortium.pki, rounds=3)
    assert pull(consortium.target, out=out, **consortium.pull_args()).round == 2


def test_a_corrupted_partial_file_fails_the_pull_and_leaves_no_checkpoint(consortium, tmp_path):
    out = tmp_path / "got"
    with pytest.raises(Interrupt):
        pull(consortium.target, out=out, on_progress=stop_after(2 * 1024),
             **consortium.pull_args())
    partial, meta = partial_paths(out)
    raw = bytearray(partial.read_bytes())
    raw[700] ^= 0xFF  # inside the first file's bytes
    partial.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="SHA-256 .* differs .*corrupted"):
        pull(consortium.target, out=out, **consortium.pull_args())
    assert not out.exists() and not partial.exists() and not meta.exists()
    assert pull(consortium.target, out=out, **consortium.pull_args()).resumed_from == 0


def test_pull_time_of_a_tiny_model_checkpoint(tmp_path):
    """Not a pass/fail on time: prints the wall time of a ~16 MB pull over loopback TLS."""
    pki = make_pki(tmp_path / "pki")
    workdir = tmp_path / "fed"
    save_checkpoint(workdir / "checkpoints" / "round-0001", pki, rounds=1, realistic=True)
    server, port = build_server(RegistryService(workdir, pki), host="127.0.0.1", port=0)
    server.start()
    try:
        args = {"ca": pki / "ca.pem", "cert": pki / "researchers" / "alice.pem",
                "key": pki / "researchers" / "alice.key"}
        timings = []
        for i in range(3):
            started = time.perf_counter()
            result = pull(f"localhost:{port}", out=tmp_path / f"got{i}", **args)
            timings.append(time.perf_counter() - started)
    finally:
        server.stop(grace=None)
    assert result.size > 3_000_000
    print(f"\npull of {result.size / 1e6:.2f} MB over loopback mutual TLS: "
          f"{', '.join(f'{t * 1000:.0f} ms' for t in timings)} (first includes hashing)")


def test_a_pull_creates_the_missing_parent_folders_of_its_output(consortium, tmp_path):
    out = tmp_path / "not" / "yet" / "there"
    assert pull(consortium.target, out=out, **consortium.pull_args()).round >= 1
    assert (out / "model_card.json").is_file()


def test_pulls_reach_the_audit_log_and_the_server_metrics(tmp_path):
    from fedehr.server.metrics import ServerCollector
    from fedehr.server.registry.service import audit_pulls
    from fedehr.shared import audit
    from fedehr.shared.monitoring import MonitoringServer
    from tests.server.test_metrics import scrape, value
    from tests.shared.registry.consortium import Consortium

    pki, workdir, log = make_pki(tmp_path / "pki"), tmp_path / "fed", tmp_path / "audit.jsonl"
    # ~16 MB: far more than gRPC's flow-control window, so the server cannot have handed
    # the whole stream to gRPC before the client cuts it (a tiny one raced to "complete")
    save_checkpoint(workdir / "checkpoints" / "round-0001", pki, rounds=1, realistic=True)
    world = Consortium(pki, workdir)
    server, port = build_server(RegistryService(workdir, pki, chunk_size=CHUNK,
                                                on_pull=audit_pulls(log)), port=0)
    server.start()
    world.target = f"localhost:{port}"
    try:
        with pytest.raises(Interrupt):
            pull(world.target, out=tmp_path / "cut", on_progress=stop_after(2048),
                 **world.pull_args())
        full = pull(world.target, out=tmp_path / "whole", **world.pull_args())
        deadline = time.monotonic() + 10  # the cut-off stream is reported when gRPC notices
        while len([x for x in audit.read(log) if x["event"] == "pull"]) < 2:
            assert time.monotonic() < deadline, "the interrupted pull was never audited"
            time.sleep(0.1)
    finally:
        server.stop(grace=None)
    assert audit.verify(log).ok
    with MonitoringServer([ServerCollector(workdir, log)], host="127.0.0.1", port=0) as mon:
        m = scrape(mon.url)
    assert value(m, "fedehr_registry_pulls_total", researcher="alice", complete="true") == 1
    assert value(m, "fedehr_registry_pulls_total", researcher="alice", complete="false") == 1
    sent = value(m, "fedehr_registry_pull_bytes_total", researcher="alice")
    # the cut-off stream counts the chunks the server had handed to gRPC when it noticed
    # the cut: at least the one the client read (counted after the yield, it raced to 0)
    assert full.size + CHUNK <= sent < 2 * full.size
