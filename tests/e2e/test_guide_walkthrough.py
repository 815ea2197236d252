"""The guides, followed literally: an operator, two hospitals and a researcher,
each typing only the `fedehr` commands docs/ teaches, as separate programs.

Consortium from nothing (PKI), hospital data into MEDS (one hospital's from a German
FHIR bulk export, which its site then serves), the server with JSON
logs, two site daemons, one federated round, the researcher's list, pull,
verify and card, a patient found as docs/ask.md says and asked about, the
operator's registry (started and stopped) and revocation commands, the audit
log, and orderly shutdown; the pre-flight checks of both sides on the way.
tests/test_guides.py checks that every command the guides show is run by some
test; most of them are run here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedehr.shared.data.synth import synthesize
from fedehr.shared.processes import free_port, wait_for_port
from tests.fixtures.fhir_fixture import write_mii_hospital
from tests.fixtures.mimic_iv_fixture import write_mimic_iv_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FEDEHR = str(Path(sys.executable).parent / "fedehr")
SITES = ("hospital_a", "hospital_b")


def fedehr(*args, cwd: Path, check: bool = True,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """One command as a user types it; output kept for the assertion message."""
    done = subprocess.run([FEDEHR, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})
    if check:
        command = " ".join(map(str, args))
        assert done.returncode == 0, f"fedehr {command}\n{done.stdout}\n{done.stderr}"
    return done


def daemon(*args, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([FEDEHR, *map(str, args)], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_line(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if needle in line:
                return line
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} never appeared in {log}:\n{log.read_text()}")


def _first_patient(listing: str) -> int:
    """The first subject_id in `fedehr site patients`' table (docs/ask.md)."""
    cells = (line.split("│")[1].strip() for line in listing.splitlines() if "│" in line)
    return int(next(cell for cell in cells if cell.isdigit()))


def write_federation(root: Path, anchor: Path) -> dict:
    ports = {"superlink": free_port(), "registry": free_port(), "metrics": free_port()}
    fed = {"name": "walkthrough", "workdir": "federation", "pki": "pki",
           "superlink": {"host": "127.0.0.1", "port": ports["superlink"]},
           "sites": list(SITES), "min_sites": 2, "rounds": 1, "round_timeout": 120,
           "anchor": str(anchor), "registry_port": ports["registry"],
           "metrics_port": ports["metrics"], "vocabulary": {"min_count": 5},
           "model": {"preset": "tiny", "max_len": 48},
           "local": {"steps": 4, "batch_size": 8, "lr": 2e-3},
           "warm_start": {"steps": 5, "batch_size": 8}}
    (root / "federation.yaml").write_text(yaml.safe_dump(fed))
    return ports


def write_site(root: Path, name: str, data: Path, superlink_port: int, approval: dict) -> None:
    site = {"name": name, "data": str(data), "state_dir": f"state/{name}",
            "superlink": f"127.0.0.1:{superlink_port}", "ca_certificate": "pki/ca.pem",
            "auth_key": f"pki/sites/{name}.key", "port": free_port(),
            "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"},
            "training": {"threads": 1}, "approval": approval}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(site))


def test_the_guides_from_an_empty_folder(tmp_path, anchor):
    root = tmp_path
    # -- operator: credentials (docs/pki.md, docs/federation.md) ----------------------
    fedehr("pki", "init", "--dir", "pki", "--name", "Walkthrough CA", cwd=root)
    fedehr("pki", "bundle-key", "--dir", "pki", cwd=root)
    fedehr("pki", "server", "--dir", "pki", "--host", "127.0.0.1", "--host", "localhost",
           cwd=root)
    for name in SITES:
        fedehr("pki", "site", name, "--dir", "pki", cwd=root)
    fedehr("pki", "researcher", "alice", "--role", "researcher", "--dir", "pki", cwd=root)
    fedehr("pki", "researcher", "olga", "--role", "operator", "--dir", "pki", cwd=root)
    assert "alice" in fedehr("pki", "list", "--dir", "pki", cwd=root).stdout

    # -- hospital IT: the EHR export into MEDS (docs/site.md) -------------------------
    export = root / "mimic-export"
    write_mimic_iv_fixture(export, version="2.2")
    fedehr("data", "import", "--from", "mimic-iv", export, "meds-import", cwd=root)
    fedehr("data", "validate", "meds-import", cwd=root)
    assert "subjects" in fedehr("data", "stats", "meds-import", cwd=root).stdout.lower()
    # hospital_b is a German university hospital: its FHIR bulk export in the MII core
    # data set's shapes (ICD-10-GM, OPS, LOINC/UCUM, ATC, German letters; docs/etl-fhir.md)
    write_mii_hospital(root / "fhir-export", patients=120, seed=5)
    imported = fedehr("data", "import", "--from", "fhir", "fhir-export", "meds-german",
                      cwd=root).stdout
    assert "120" in imported, imported
    fedehr("data", "validate", "meds-german", cwd=root)
    synth = synthesize(root / "synth", sites=1, patients=240, seed=3)
    ports = write_federation(root, anchor)
    # hospital_a trusts the consortium's bundle key, hospital_b this exact bundle
    bundle = fedehr("run", "bundle-hash", "--config", "federation.yaml", cwd=root).stdout
    approvals = [{"bundle_public_key": "pki/signing/bundle.pub"},
                 {"bundle_hashes": [bundle.strip()]}]
    site_data = [Path(synth[0].path), root / "meds-german"]
    for name, data, approval in zip(SITES, site_data, approvals, strict=True):
        write_site(root, name, data, ports["superlink"], approval)

    # -- both sides: the pre-flight checks (docs/federation.md, docs/site.md) ----------
    # exit 2 (amber only) is allowed: free disk on a test machine is not ours to decide
    assert fedehr("server", "check", "--config", "federation.yaml", cwd=root,
                  check=False).returncode in (0, 2)
    server_log, procs = root / "server.out", []
    try:
        # -- operator: the server, JSON logs for the log shipper -----------------------
        server = daemon("--log-format", "json", "server", "start", "--config",
                        "federation.yaml", cwd=root, log=server_log)
        procs.append(server)
        wait_for_line(server_log, "Ctrl-C stops the server", server)
        lines = [json.loads(x) for x in server_log.read_text().splitlines() if x.strip()]
        assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
        assert any("checkpoint registry" in x["message"] for x in lines)

        # -- hospital IT: the site daemons ---------------------------------------------
        for name, log_format in zip(SITES, ("text", "json"), strict=True):
            procs.append(daemon("--log-format", log_format, "site", "start", "--config",
                                f"{name}.yaml", cwd=root, log=root / f"{name}.out"))
        for name, proc in zip(SITES, procs[1:], strict=True):
            wait_for_line(root / f"{name}.out", "SuperNode started", proc)
        checked = fedehr("site", "check", "--config", "hospital_a.yaml", cwd=root,
                         check=False)
        assert checked.returncode in (0, 2) and "CA matches" in checked.stdout, checked.stdout
        site_lines = (root / "hospital_b.out").read_text().splitlines()
        assert all(json.loads(x)["logger"] == "fedehr.site" for x in site_lines if x.strip())

        # -- operator: one run, watched to the end --------------------------------------
        run = fedehr("run", "start", "--config", "federation.yaml", cwd=root, timeout=600)
        assert "finished" in run.stdout and "round 1 done: sites" in run.stdout
        assert "finished" in fedehr("run", "status", "--config", "federation.yaml",
                                    cwd=root).stdout
        site_status = fedehr("site", "status", "--config", "hospital_a.yaml", cwd=root).stdout
        assert "dp-sgd" in site_status and "daemon: running since" in site_status
        assert "its SuperNode is connected to" in site_status
        german = fedehr("site", "status", "--config", "hospital_b.yaml", cwd=root).stdout
        assert "dp-sgd" in german, german
        # its German letters reached the note encoder (the token caches count them)
        caches = (root / "state" / "hospital_b" / "cache").glob("*/meta.json")
        assert sum(json.loads(c.read_text())["notes"] for c in caches) > 0

        # -- researcher: list, pull, verify, card (docs/researchers.md) ----------------
        registry = f"127.0.0.1:{ports['registry']}"
        alice = ["--pki-ca", "pki/ca.pem", "--cert", "pki/researchers/alice.pem",
                 "--key", "pki/researchers/alice.key"]
        assert "hospital_a" in fedehr("model", "list", "--registry", registry, *alice,
                                      cwd=root).stdout
        fedehr("model", "pull", "--registry", registry, *alice, "--round", "latest",
               "--out", "ckpt", "--trusted-key", "pki/signing/consortium.pub", cwd=root)
        fedehr("model", "verify", "ckpt", "--trusted-key", "pki/signing/consortium.pub",
               cwd=root)
        assert "epsilon" in fedehr("model", "card", "ckpt", cwd=root).stdout.lower()
        # docs/ask.md: a held-out patient (never trained on) who was discharged
        listing = fedehr("site", "patients", "--data", synth[0].path, "--code",
                         "^HOSPITAL_DISCHARGE", "--split", "held_out", "--limit", "1",
                         cwd=root).stdout
        patient = _first_patient(listing)
        answer = fedehr("model", "ask", "--checkpoint", "ckpt", "--data", synth[0].path,
                        "--patient", patient, "--prompt", "death within 30 days after discharge",
                        "--samples", "4", "--explain", "1", "--trusted-key",
                        "pki/signing/consortium.pub", "--yes", cwd=root).stdout
        assert "probability" in answer and "95% CI" in answer
        fedehr("model", "evaluate", "--checkpoint", "ckpt", "--data", synth[0].path,
               "--tasks", "mortality", "--zero-shot-samples", "0", "--ks", "16",
               "--seeds", "1", "--no-notes", "--out", "report", cwd=root)
        assert (root / "report" / "report.md").is_file()

        # -- operator: the registry alone, publish and withdraw, revoke a researcher ----
        olga = ["--cert", "pki/researchers/olga.pem", "--key", "pki/researchers/olga.key"]
        second = free_port()
        standalone = daemon("registry", "start", "--workdir", "federation", "--pki", "pki",
                            "--host", "127.0.0.1", "--port", second, cwd=root,
                            log=root / "registry.out")
        procs.append(standalone)
        wait_for_port("127.0.0.1", second, timeout=60, proc=standalone)
        other = f"127.0.0.1:{second}"
        fedehr("registry", "publish", "ckpt", "--round", "40", "--registry", other, *olga,
               "--pki-ca", "pki/ca.pem", cwd=root)
        assert "40" in fedehr("model", "list", "--registry", other, *alice, cwd=root).stdout
        fedehr("registry", "revoke", "40", "--reason", "walkthrough", "--registry", other,
               *olga, "--pki-ca", "pki/ca.pem", cwd=root)
        fedehr("pki", "revoke", "alice", "--dir", "pki", cwd=root)
        refused = fedehr("model", "list", "--registry", registry, *alice, cwd=root,
                         check=False)
        assert refused.returncode != 0 and "revoked" in refused.stderr
        assert "Traceback" not in refused.stderr
        fedehr("registry", "stop", "--workdir", "federation", cwd=root)
        assert standalone.wait(timeout=60) == 0

        # -- operator: audit, a late joiner, a run stopped early ------------------------
        fedehr("audit", "verify", "federation/audit.jsonl", cwd=root)
        assert "round" in fedehr("audit", "show", "federation/audit.jsonl", "--last", "5",
                                 cwd=root).stdout
        fedehr("pki", "site", "hospital_c", "--dir", "pki", cwd=root)
        fedehr("server", "register", "hospital_c", "--config", "federation.yaml", cwd=root)
        fedehr("run", "start", "--config", "federation.yaml", "--no-watch", cwd=root)
        assert "stopped run" in fedehr("run", "stop", "--config", "federation.yaml",
                                       cwd=root).stdout

        # -- everyone: orderly shutdown --------------------------------------------------
        for name in SITES:
            fedehr("site", "stop", "--config", f"{name}.yaml", cwd=root)
        fedehr("server", "stop", "--config", "federation.yaml", cwd=root)
        for proc in procs[:3]:
            assert proc.wait(timeout=60) == 0, proc.args
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
