"""Starting a hospital's Flower SuperNode.

The SuperNode connects out to the consortium's SuperLink over TLS, proves
its identity with the site key registered by the operator, and runs the
ClientApp for each message. Its node config names the site.yaml, which is
where the ClientApp reads everything about the site (data, budget, limits).

Two ways to run the ClientApp (`fedehr site start --isolation`):

- ``worker`` (default): the SuperNode runs with ``--isolation process`` and the
  site's own long-lived worker (fedehr.client.worker) claims its tasks,
  checks the bundle's approval and runs the installed fedehr. The two share a
  secret (``--superexec-auth-secret-file``) so no other local process can
  claim the site's tasks.
- ``subprocess``: Flower's default, a fresh `flwr-clientapp` per message that
  installs the bundle and imports whatever its clientapp component names.
  There is no approval check on this path: it is kept for comparison and
  benchmarks only.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from fedehr.client.config import SiteConfig
from fedehr.shared.processes import Supervisor, flower_env, wait_for_port

ISOLATIONS = ("worker", "subprocess")


def worker_secret_path(site: SiteConfig) -> Path:
    return site.state_dir / "worker.secret"


def new_worker_secret(site: SiteConfig) -> Path:
    """A fresh shared secret for the SuperNode and its worker, readable by this user only."""
    from fedehr.shared.atomic import write_bytes

    path = worker_secret_path(site)
    write_bytes(path, secrets.token_bytes(32), mode=0o600)
    return path


def supernode_args(site: SiteConfig, site_config_path: Path, isolation: str = "subprocess",
                   secret_file: Path | None = None) -> list[str]:
    args = [str(Path(sys.executable).parent / "flower-supernode"),
            "--superlink", site.superlink, "--port", str(site.port),
            "--node-config", f"site-config='{site_config_path.resolve()}'"]
    if isolation == "worker":
        args += ["--isolation", "process"]
        if secret_file is not None:
            args += ["--superexec-auth-secret-file", str(secret_file)]
    if site.insecure:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(site.ca_certificate)]
    if site.auth_key is not None:
        args += ["--auth-supernode-private-key", str(site.auth_key)]
    return args


def start_supernode(supervisor: Supervisor, site: SiteConfig, site_config_path: Path,
                    *, log: Path | None = None, isolation: str = "subprocess",
                    secret_file: Path | None = None) -> None:
    """Start the SuperNode and wait until its local runtime port answers."""
    log = log or site.state_dir / "logs" / "supernode.log"
    env = flower_env(site.state_dir / "flwr-home", {"FEDEHR_SITE_CONFIG": str(site_config_path)})
    args = supernode_args(site, site_config_path, isolation, secret_file)
    proc = supervisor.start(f"supernode-{site.name}", args, log=log, env=env)
    wait_for_port("127.0.0.1", site.port, timeout=60, proc=proc, log=log)


def worker_name(site: SiteConfig) -> str:
    return f"worker-{site.name}"


def start_worker(supervisor: Supervisor, site: SiteConfig, site_config_path: Path,
                 secret_file: Path | None, *, log: Path | None = None) -> None:
    """Start the site worker (fedehr.client.worker) against the SuperNode's runtime port."""
    log = log or site.state_dir / "logs" / "worker.log"
    env = flower_env(site.state_dir / "flwr-home", {"FEDEHR_SITE_CONFIG": str(site_config_path)})
    args = [sys.executable, "-m", "fedehr.client.worker", "--config",
            str(site_config_path.resolve()), "--runtime-address", f"127.0.0.1:{site.port}"]
    if secret_file is not None:
        args += ["--secret-file", str(secret_file)]
    supervisor.start(worker_name(site), args, log=log, env=env)
