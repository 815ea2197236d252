"""Starting a hospital's Flower SuperNode.

The SuperNode connects out to the consortium's SuperLink over TLS, proves
its identity with the site key registered by the operator, and runs the
ClientApp for each message. Its node config names the site.yaml, which is
where the ClientApp reads everything about the site (data, budget, limits).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedehr.client.config import SiteConfig
from fedehr.shared.processes import Supervisor, flower_env, wait_for_port


def supernode_args(site: SiteConfig, site_config_path: Path) -> list[str]:
    args = [str(Path(sys.executable).parent / "flower-supernode"),
            "--superlink", site.superlink, "--port", str(site.port),
            "--node-config", f"site-config='{site_config_path.resolve()}'"]
    if site.insecure:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(site.ca_certificate)]
    if site.auth_key is not None:
        args += ["--auth-supernode-private-key", str(site.auth_key)]
    return args


def start_supernode(supervisor: Supervisor, site: SiteConfig, site_config_path: Path,
                    *, log: Path | None = None) -> None:
    """Start the SuperNode and wait until its local runtime port answers."""
    log = log or site.state_dir / "logs" / "supernode.log"
    env = flower_env(site.state_dir / "flwr-home", {"FEDEHR_SITE_CONFIG": str(site_config_path)})
    proc = supervisor.start(f"supernode-{site.name}", supernode_args(site, site_config_path),
                            log=log, env=env)
    wait_for_port("127.0.0.1", site.port, timeout=60, proc=proc, log=log)
