"""`fedehr server check`: the operator's side of the pre-flight check (issue 17).

federation.yaml parses and its paths resolve; the PKI holds what `fedehr
server start` needs (CA, a SuperLink certificate the CA signed that names the
SuperLink's host and is not about to expire, every listed site's key, the
bundle key); before the server starts, its ports are free; once it runs, the
SuperLink and the registry answer over TLS with a certificate the CA accepts.
Levels, exit codes and the shared probes are in fedehr.shared.preflight.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from fedehr.server.config import FederationConfig, load_federation_config
from fedehr.shared.errors import FedEHRError
from fedehr.shared.preflight import Check, certificate_check, disk_check, port_free, tls_handshake

DISK_RED = 1 * 2**30  # checkpoints of a few rounds, logs, Flower state
DISK_AMBER = 10 * 2**30
WILDCARD = ("0.0.0.0", "::", "")


def server_checks(config: Path, *, disk_red: int = DISK_RED,
                  disk_amber: int = DISK_AMBER) -> list[Check]:
    try:
        cfg = load_federation_config(config)
    except FedEHRError as exc:
        return [Check("config", "red", exc.message, exc.fix or f"edit {config}")]
    checks = [Check("config", "green", f"{config} parses ({len(cfg.sites)} sites, "
                    f"{cfg.rounds} rounds)"), path_check(cfg)]
    checks += pki_checks(cfg)
    checks += service_checks(cfg)
    checks.append(disk_check("disk", cfg.workdir, red_below=disk_red, amber_below=disk_amber))
    return checks


def path_check(cfg: FederationConfig) -> Check:
    fix = "fix it in federation.yaml (relative paths are relative to the file)"
    for key, path in (("pki", cfg.pki), ("anchor", cfg.anchor),
                      ("vocabulary.candidates", cfg.vocabulary.candidates)):
        if path is not None and not path.exists():
            return Check("paths", "red", f"{key}: {path} does not exist", fix)
    parent = next(p for p in (cfg.workdir, *cfg.workdir.parents) if p.exists())
    if not os.access(parent, os.W_OK):
        return Check("paths", "red", f"workdir: {cfg.workdir} is not writable here", fix)
    return Check("paths", "green", "every path resolves")


def pki_checks(cfg: FederationConfig) -> list[Check]:
    from fedehr.shared.pki import PKIPaths

    if cfg.superlink.insecure:
        return [Check("pki", "amber", "superlink.insecure: true (no TLS, no site "
                      "authentication)", "tests only: remove insecure and set pki")]
    if cfg.pki is None or not cfg.pki.is_dir():
        return [Check("pki", "red", f"no PKI folder at {cfg.pki}", "run `fedehr pki init`")]
    pki = PKIPaths.of(cfg.pki)
    ca_check, ca = certificate_check("ca", pki.ca_cert, fix=f"run `fedehr pki init --dir "
                                     f"{cfg.pki}` (a new CA means new keys for everyone)")
    checks = [ca_check, superlink_certificate(cfg, pki, ca)]
    missing = [name for name in cfg.sites if not pki.site_pub(name).is_file()]
    checks.append(Check("site keys", "red", f"no key for {', '.join(missing)}",
                        f"run `fedehr pki site NAME --dir {cfg.pki}` for each") if missing else
                  Check("site keys", "green", f"all {len(cfg.sites)} listed sites have a key"))
    bundle_pub = cfg.pki / "signing" / "bundle.pub"
    checks.append(Check("bundle key", "green", f"{bundle_pub} signs the bundles")
                  if bundle_pub.is_file() else
                  Check("bundle key", "amber", "no bundle key: runs ship unsigned and sites "
                        "approving by key refuse them", f"run `fedehr pki bundle-key --dir "
                        f"{cfg.pki}` and give bundle.pub to every site"))
    return checks


def superlink_certificate(cfg: FederationConfig, pki, ca) -> Check:
    from cryptography.exceptions import InvalidSignature

    host = cfg.superlink.host
    fix = f"run `fedehr pki server --host {host} --dir {cfg.pki} --force`"
    found, cert = certificate_check("superlink certificate", pki.server_cert, fix=fix)
    if cert is None or found.level == "red":
        return found
    if not pki.server_key.is_file():
        return Check("superlink certificate", "red", f"{pki.server_key} not found", fix)
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return Check("superlink certificate", "red", f"{pki.server_cert} was not signed by "
                         f"{pki.ca_cert} ({exc.__class__.__name__})", fix)
    if host not in WILDCARD and not names_host(cert, host):
        return Check("superlink certificate", "red", f"{pki.server_cert} does not name "
                     f"{host} (it names {', '.join(certificate_names(cert))})", fix)
    return found


def certificate_names(cert) -> list[str]:
    """The DNS names and IP addresses a certificate's subjectAltName lists."""
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return (names.get_values_for_type(x509.DNSName)
            + [str(ip) for ip in names.get_values_for_type(x509.IPAddress)])


def names_host(cert, host: str) -> bool:
    """Would a client dialing `host` accept `cert` by name (IPs compared as addresses)?"""
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = host.lower()
    return host in (name.lower() for name in certificate_names(cert))


def service_checks(cfg: FederationConfig) -> list[Check]:
    """Ports free before the server starts; SuperLink and registry answering once it runs."""
    from fedehr.shared.processes import daemon_state

    host = cfg.superlink.host
    local = "localhost" if host in WILDCARD else host  # the certificate always names it
    ports = [("superlink", cfg.superlink.port), ("registry", cfg.registry_port),
             ("metrics", cfg.metrics_port)]
    if not daemon_state(cfg.workdir / "server.pid").running:
        checks = [port_free(f"{name} port", host, port, f"stop what holds {host}:{port} or "
                            f"change the port in federation.yaml")
                  for name, port in ports if port is not None]
    elif cfg.superlink.insecure or cfg.pki is None:
        checks = [Check("superlink", "amber", "running without TLS: not checked",
                        "tests only")]
    else:
        ca = cfg.pki / "ca.pem"
        checks = [tls_handshake("superlink", local, cfg.superlink.port, ca)]
        if cfg.registry_port is not None:
            checks.append(tls_handshake("registry", local, cfg.registry_port, ca))
    if cfg.registry_port is None and not daemon_state(cfg.workdir / "registry.pid").running:
        checks.append(Check("registry", "amber", "no registry_port and no standalone "
                            "registry: researchers cannot pull checkpoints",
                            "set registry_port in federation.yaml, or run `fedehr registry "
                            f"start --workdir {cfg.workdir}`"))
    return checks
