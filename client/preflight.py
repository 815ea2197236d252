"""`fedehr site check`: what would make this hospital's first run fail or mislead.

The checks hospital IT wants before joining (issue 17): site.yaml parses and
its paths resolve; the MEDS data validates and how much of it the consortium's
vocabulary covers (after the first vocabulary round); the privacy budget left (the
ledger is read, never written); the consortium CA and the site key; the
approval settings; the SuperLink reachable over TLS from this host with a
certificate the CA accepts; disk space for the state folder; where metrics
are served. `fedehr site start` runs the same list (`at_start=True`): a red
line stops it, amber ones are logged. Levels, exit codes and the shared
probes are in fedehr.shared.preflight.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from fedehr.client.config import SiteConfig, load_site_config
from fedehr.shared.errors import FedEHRError
from fedehr.shared.preflight import (
    TLS_TIMEOUT,
    Check,
    certificate_check,
    disk_check,
    listening,
    port_free,
    tls_handshake,
)

DISK_RED = 512 * 2**20  # the token cache, stored replies and logs of a small site
DISK_AMBER = 2 * 2**30
LOW_BUDGET = 0.1  # share of the budget left below which the line turns amber


def site_checks(config: Path, *, at_start: bool = False, disk_red: int = DISK_RED,
                disk_amber: int = DISK_AMBER) -> list[Check]:
    """Every check, in the order a newcomer fixes them; stops after a broken config."""
    try:
        site = load_site_config(config)
    except FedEHRError as exc:
        return [Check("config", "red", exc.message, exc.fix or f"edit {config}")]
    checks = [Check("config", "green", f"{config} parses"), *path_checks(site)]
    if site.data.is_dir():
        checks.append(data := data_check(site))
        if data.level != "red" and not at_start:
            checks.append(vocabulary_check(site))
    checks += [budget_check(site), *certificate_checks(site), approval_check(site),
               superlink_check(site, at_start=at_start),
               disk_check("disk", site.state_dir, red_below=disk_red, amber_below=disk_amber),
               metrics_check(site)]
    return checks


def path_checks(site: SiteConfig) -> list[Check]:
    """Each path site.yaml names exists (relative ones are relative to site.yaml)."""
    wanted = [("data", site.data, "dir"), ("ca_certificate", site.ca_certificate, "file"),
              ("auth_key", site.auth_key, "file"), ("harmonisation", site.harmonisation, "file"),
              ("approval.bundle_public_key", site.approval.bundle_public_key, "file"),
              ("privacy.noise_seed_file", site.privacy.noise_seed_file, "file"),
              ("modalities.note_encoder", site.modalities.note_encoder, "dir"),
              ("anchor", site.anchor, "wheel or folder")]
    is_kind = {"dir": Path.is_dir, "file": Path.is_file}
    missing = [Check("paths", "red", f"{key}: {path} is not a {kind}",
                     f"fix '{key}' in site.yaml (relative paths are relative to the file)")
               for key, path, kind in wanted
               if path is not None and not is_kind.get(kind, Path.exists)(path)]
    if not site.state_dir.is_dir():
        parent = next(p for p in site.state_dir.parents if p.exists())
        if not os.access(parent, os.W_OK):
            missing.append(Check("paths", "red", f"state_dir: {site.state_dir} cannot be "
                                 f"created ({parent} is not writable)",
                                 "point state_dir at a folder the daemon's user may write"))
    named = sum(path is not None for _, path, _ in wanted) + 1
    return missing or [Check("paths", "green", f"all {named} paths resolve")]


def data_check(site: SiteConfig) -> Check:
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.data.validate import validate

    problems = validate(site.data)
    errors = [p for p in problems if p.severity == "error"]
    fix = f"run `fedehr data validate {site.data}` and re-export"
    if errors:
        return Check("data", "red", f"{len(errors)} MEDS error(s), first: {errors[0].message}",
                     fix)
    patients = MEDSDataset.open(site.data).subject_splits().height
    if problems:
        return Check("data", "amber", f"{patients:,} patients; {len(problems)} warning(s), "
                     f"first: {problems[0].message}", fix)
    return Check("data", "green", f"valid MEDS, {patients:,} patients in {site.data}")


def vocabulary_check(site: SiteConfig) -> Check:
    """Share of the site's events (all, and labs) inside the consortium's vocabulary: the
    newest one a vocabulary round left in state_dir/vocab (fedehr.shared.data.stats)."""
    from fedehr.client.site_data import site_mapping
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.data.stats import vocabulary_coverage
    from fedehr.shared.tokenizer.vocabulary import Vocabulary

    kept = sorted((site.state_dir / "vocab").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not kept:
        return Check("vocabulary", "green", "no vocabulary round yet: measure coverage of the "
                     f"anchor's with `fedehr data stats {site.data}`")
    try:
        mapping = site_mapping(site, MEDSDataset.open(site.data))
        cov = vocabulary_coverage(site.data, Vocabulary.from_json(kept[-1]), str(kept[-1]),
                                  mapping=mapping, top=1)
    except FedEHRError as exc:
        return Check("vocabulary", "red", exc.message, exc.fix or "")
    text = f"{cov.share:.1%} of events, {cov.lab_share:.1%} of lab events inside the " \
        "consortium's vocabulary"
    if cov.warnings:
        return Check("vocabulary", "amber", text + " (below 80 %: the rest reach the model "
                     "as unknown)", "map local codes to standard ones in the harmonisation "
                     f"file (code_map); `fedehr data stats {site.data}` lists the top ones")
    return Check("vocabulary", "green", text)


def budget_check(site: SiteConfig) -> Check:
    """The epsilon left, read from the ledger without writing it (`PrivacyLedger.open`
    would create or update the file)."""
    from fedehr.client import activity
    from fedehr.client.privacy.ledger import PrivacyLedger

    p = site.privacy
    budget = f"epsilon budget {p.epsilon:g} (delta {p.delta:g}, {p.accountant})"
    if not site.ledger_path.exists():
        released = [e for e in activity.read(site.state_dir)
                    if e.get("kind") in ("train", "release")] if site.state_dir.is_dir() else []
        if released and not getattr(p, "new_ledger", False):
            return Check("budget", "red", f"the privacy ledger is missing but this site has "
                         f"released {len(released)} times", "restore the ledger from backup")
        return Check("budget", "green", f"no release yet: all of the {budget} left")
    try:
        ledger = PrivacyLedger.read(site.ledger_path)  # read-only: no create, no budget change
    except FedEHRError as exc:
        return Check("budget", "red", exc.message, exc.fix or "restore the ledger")
    if ledger.delta != p.delta or ledger.accountant != p.accountant:
        return Check("budget", "red", f"the ledger was kept at delta {ledger.delta:g} with "
                     f"{ledger.accountant}, site.yaml says delta {p.delta:g} with {p.accountant}",
                     "put the ledger's delta and accountant back in site.yaml")
    left = max(0.0, p.epsilon - ledger.spent())
    text = f"epsilon {ledger.spent():.3f} spent, {left:.3f} left of {budget}"
    if ledger.spent() > p.epsilon:
        return Check("budget", "red", text + f": site.yaml's budget {p.epsilon:g} is below "
                     "what this site has already spent, so `site start` refuses",
                     f"put privacy.epsilon back to at least {ledger.spent():.3f}")
    if left <= 0:
        return Check("budget", "amber", text + "; training will be refused",
                     "nothing to do unless the consortium agrees a larger budget")
    if left < LOW_BUDGET * p.epsilon:
        return Check("budget", "amber", text + " (under 10 % left)",
                     "expect the next rounds to be refused")
    return Check("budget", "green", text)


def certificate_checks(site: SiteConfig) -> list[Check]:
    if site.insecure:
        return [Check("certificates", "amber", "insecure: true (plain HTTP, no certificates)",
                      "tests only: set ca_certificate and auth_key and remove insecure")]
    ca_check, _ = certificate_check("ca_certificate", site.ca_certificate,
                                    fix="get the consortium's current ca.pem from the operator")
    return [ca_check, auth_key_check(site)]


def auth_key_check(site: SiteConfig) -> Check:
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    fix = f"ask the operator for sites/{site.name}.key (`fedehr pki site {site.name}`)"
    if site.auth_key is None:
        return Check("auth_key", "red", "no auth_key in site.yaml: the SuperLink will refuse "
                     "this site", fix)
    if not site.auth_key.is_file():
        return Check("auth_key", "red", f"{site.auth_key} not found", fix)
    try:
        load_ssh_private_key(site.auth_key.read_bytes(), password=None)
    except (ValueError, TypeError):
        return Check("auth_key", "red", f"{site.auth_key} is not an OpenSSH private key", fix)
    if stat.S_IMODE(site.auth_key.stat().st_mode) & 0o077:
        return Check("auth_key", "amber", f"{site.auth_key} is readable by other users",
                     f"chmod 600 {site.auth_key}")
    return Check("auth_key", "green", f"{site.auth_key} is a private key, mode 0600")


def approval_check(site: SiteConfig) -> Check:
    a = site.approval
    fix = ("add approval.bundle_public_key (the consortium's signing/bundle.pub) or "
           "approval.bundle_hashes (`fedehr run bundle-hash`) to site.yaml")
    if not a.clientapps:
        return Check("approval", "red", "approval.clientapps is empty: nothing may run", fix)
    if a.bundle_public_key is not None:
        from fedehr.shared.pki.bundle_signing import load_bundle_public_key

        try:
            load_bundle_public_key(a.bundle_public_key)
        except (FedEHRError, OSError, ValueError) as exc:
            return Check("approval", "red", f"bundle_public_key: {exc}", fix)
        return Check("approval", "green", f"bundles signed by {a.bundle_public_key.name} run "
                     f"({len(a.bundle_hashes)} hash(es) listed too)")
    if a.bundle_hashes:
        return Check("approval", "green", f"{len(a.bundle_hashes)} bundle hash(es) approved")
    return Check("approval", "red", "no bundle key and no bundle hash: every run is refused",
                 fix)


def superlink_check(site: SiteConfig, *, at_start: bool = False) -> Check:
    host, _, port = site.superlink.rpartition(":")
    if not host or not port.isdigit():
        return Check("superlink", "red", f"superlink {site.superlink!r} is not host:port",
                     "write superlink: host:port")
    if site.insecure or site.ca_certificate is None or not site.ca_certificate.is_file():
        state = "reachable" if listening(host.strip("[]"), int(port)) else "not reachable"
        return Check("superlink", "amber", f"{site.superlink} {state} (TLS not checked: "
                     "no usable ca_certificate)", "set ca_certificate")
    # At start the SuperNode keeps retrying a SuperLink that is down, so only a wrong
    # certificate, which retrying cannot fix, is red there.
    unreachable = "amber" if at_start else "red"
    host = host.strip("[]")
    if problem := connection_problem(host, int(port)):
        return Check("superlink", unreachable, *problem)
    return explain_tls(tls_handshake("superlink", host, int(port), site.ca_certificate,
                                     unreachable=unreachable), host)


def connection_problem(host: str, port: int, timeout: float = TLS_TIMEOUT
                       ) -> tuple[str, str] | None:
    """Why a TCP connection to host:port fails, as (message, fix); None when it connects.

    A hospital's network team needs to know which of these it is: each has
    another owner (the port in site.yaml, a route, a firewall, DNS).
    """
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror as exc:
        return (f"cannot resolve {host} ({exc.strerror})",
                "check the name in superlink: and this host's DNS")
    except ConnectionRefusedError:
        return (f"{host} refused a connection to port {port}: nothing listens there (a "
                "wrong port, or the SuperLink is not running)",
                "check the port in superlink: against the operator's superlink.port, and "
                "ask whether the server runs")
    except TimeoutError:
        return (f"no answer from {host}:{port} within {timeout:g} s (a firewall drops the "
                "connection, or the host is down)",
                f"ask the network team to allow outbound TCP to {host}:{port}")
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return (f"no route from this host to {host} ({exc.strerror})",
                    "check this host's routes, VPN or proxy towards the consortium")
        return (f"{host}:{port} not reachable ({exc.strerror or exc})",
                "check the address and the firewall between this host and the consortium")
    return None


def explain_tls(check: Check, host: str) -> Check:
    """Name the cause of a failed handshake with a SuperLink that accepted the connection
    (OpenSSL's verify messages: the name, the expiry; anything else: not TLS there)."""
    renew = f"`fedehr pki server --host {host} --force`, then restart the server"
    said = check.message
    reason = said[said.find("(") + 1:said.rfind(")")]  # OpenSSL's words, in the parentheses
    if "certificate has expired" in said:
        return Check(check.name, "red", f"the SuperLink certificate at {host} has expired "
                     f"({reason})", f"ask the operator to renew it: {renew}")
    if "mismatch" in said and "not valid for" in said:
        return Check(check.name, "red", f"the SuperLink certificate does not name {host}, "
                     f"the address this site dials ({reason})",
                     f"ask the operator to re-issue it for {host}: {renew}; or dial a name "
                     "the certificate has")
    if "not reachable over TLS" in said:  # TCP connected: no TLS server there
        return Check(check.name, check.level, said.replace(
            "not reachable over TLS", "accepts connections but completes no TLS handshake"),
            "check the port in superlink: a service other than the SuperLink answers there")
    return check


def metrics_check(site: SiteConfig) -> Check:
    if site.metrics_port is None:
        return Check("metrics", "green", "off (no metrics_port)")
    host = getattr(site, "metrics_host", "127.0.0.1")
    address = f"{host}:{site.metrics_port}"
    from fedehr.shared.processes import daemon_state

    if daemon_state(site.state_dir / "site.pid").running and \
            listening("127.0.0.1" if host in ("0.0.0.0", "") else host, site.metrics_port):
        bound = Check("metrics", "green", f"served on {address} by the running daemon")
    else:
        bound = port_free("metrics", host, site.metrics_port,
                          "pick a free metrics_port, or stop what holds it")
    if bound.level == "green" and host not in ("127.0.0.1", "::1", "localhost"):
        return Check("metrics", "amber", f"{address}: epsilon and activity counts are served "
                     "unauthenticated to that network",
                     "keep metrics_host: 127.0.0.1 unless a firewall guards the port")
    return bound
