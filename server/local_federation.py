"""A whole federation on one machine: what `fedehr demo` and the end-to-end tests run.

It writes the consortium PKI, federation.yaml and one site.yaml per hospital
into one folder, starts the TLS SuperLink (server side, in this process's
supervisor) and starts each hospital exactly as hospital IT would, with
`fedehr site start --config site.yaml` in its own process. The server side
never imports the hospital side: sites are separate programs here as in life.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fedehr.server import runs
from fedehr.server.bundle import CLIENTAPP, SECURE_CLIENTAPP, SERVERAPP
from fedehr.server.config import FederationConfig, load_federation_config
from fedehr.server.superlink import start_superlink
from fedehr.shared.atomic import write_text
from fedehr.shared.monitoring import MonitoringServer
from fedehr.shared.pki import PKIPaths, init_ca, issue_server_cert, issue_site_key
from fedehr.shared.pki.bundle_signing import create_bundle_key
from fedehr.shared.processes import Supervisor, free_port, wait_for_port


@dataclass
class HospitalSpec:
    name: str
    data: Path
    harmonisation: Path | None = None
    registered: bool = True  # False: a key the operator never registered


@dataclass
class LocalFederation:
    root: Path
    fed_yaml: Path
    site_yamls: dict[str, Path]
    site_env: dict[str, str] = field(default_factory=dict)
    clientapp: str | None = None  # None: the federation's own; tests swap in a tapping one
    serverapp: str = SERVERAPP  # tests swap in a recording ServerApp
    # The sites allow that ClientApp in their own site.yaml (a test's hospitals install
    # and vouch for it); False: leave site.yaml as written, to see a site refuse it.
    sites_allow_clientapp: bool = True
    isolation: str = "worker"  # how the site daemons run the ClientApp (`--isolation`)
    supervisor: Supervisor = field(default_factory=Supervisor)
    monitor: MonitoringServer | None = None  # the server's /metrics, once serve_metrics ran
    registry: object | None = None  # the checkpoint registry's gRPC server, once started

    # -- setup ---------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, hospitals: list[HospitalSpec], *, anchor: Path,
               federation: dict | None = None, site: dict | None = None,
               site_env: dict[str, str] | None = None, metrics: bool = False
               ) -> LocalFederation:
        """Write PKI and configs; `federation`/`site` override the defaults.

        With `metrics`, every site gets a free `metrics_port` (its daemon serves
        /metrics and /healthz there); see `serve_metrics` for the server side.
        """
        root = Path(root).resolve()
        pki = root / "pki"
        init_ca(pki, "fedehr local consortium")
        issue_server_cert(pki, ["127.0.0.1", "localhost"])
        _, bundle_pub = create_bundle_key(pki)
        port = free_port()
        fed = {"name": "local", "workdir": "federation", "pki": "pki",
               "superlink": {"host": "127.0.0.1", "port": port},
               "sites": [h.name for h in hospitals if h.registered], "min_sites": 2,
               "rounds": 3, "round_timeout": 600, "anchor": str(anchor),
               "model": {"preset": "tiny", "max_len": 128}}
        _deep_update(fed, federation or {})
        fed_yaml = root / "federation.yaml"
        write_text(fed_yaml, yaml.safe_dump(fed, sort_keys=False))
        site_yamls = {}
        for h in hospitals:
            issue_site_key(pki, h.name)
            cfg = {"name": h.name, "data": str(Path(h.data).resolve()),
                   "state_dir": f"../site-state/{h.name}", "superlink": f"127.0.0.1:{port}",
                   "ca_certificate": "../pki/ca.pem", "auth_key": f"../pki/sites/{h.name}.key",
                   "port": free_port(), "anchor": str(Path(anchor).resolve()),
                   "privacy": {"epsilon": 8.0, "delta": 1e-5, "accountant": "rdp"},
                   "approval": {"bundle_public_key": f"../pki/signing/{bundle_pub.name}"}}
            if metrics:
                cfg["metrics_port"] = free_port()
            if h.harmonisation:
                cfg["harmonisation"] = str(Path(h.harmonisation).resolve())
            _deep_update(cfg, site or {})
            # A local federation is a test or a demo: one run may use the whole budget
            # unless the caller says otherwise (sites' default is a quarter of it).
            cfg["privacy"].setdefault("epsilon_per_run", cfg["privacy"]["epsilon"])
            path = root / "sites" / f"{h.name}.yaml"
            write_text(path, yaml.safe_dump(cfg, sort_keys=False))
            site_yamls[h.name] = path
        return cls(root=root, fed_yaml=fed_yaml, site_yamls=site_yamls,
                   site_env=dict(site_env or {}))

    @property
    def config(self) -> FederationConfig:
        return load_federation_config(self.fed_yaml)

    # -- processes -----------------------------------------------------------------

    def start_server(self) -> str:
        from fedehr.server.cli import register_sites

        address = self.restart_server()
        cfg = self.config
        self.registrations = register_sites(cfg, PKIPaths.of(cfg.pki), cfg.sites)
        return address

    def start_all(self) -> None:
        """The server, then every hospital's site daemon."""
        self.start_server()
        self.start_sites(*self.site_yamls)

    def start_sites(self, *names: str) -> None:
        """Start the named site daemons together, then wait for each (they start in parallel:
        about 6 s each on 2 cores, one after the other)."""
        for name in names:
            self.start_site(name, wait=False)
        for name in names:
            self.wait_site(name)

    def restart_server(self) -> str:
        """Start the SuperLink on the configured port and database (registrations persist)."""
        cfg = self.config
        return start_superlink(self.supervisor, host=cfg.superlink.host,
                               port=cfg.superlink.port, pki=PKIPaths.of(cfg.pki),
                               flwr_home=cfg.flwr_home,
                               log=cfg.workdir / "logs" / "superlink.log",
                               database=cfg.workdir / "state" / "superlink.db")

    def serve_metrics(self, port: int = 0) -> MonitoringServer:
        """Serve the server's /metrics and /healthz from this process (0: a free port)."""
        from fedehr.server.cli import serve_metrics

        if self.monitor is None:
            self.monitor = serve_metrics(self.config, lambda: self.supervisor.alive("superlink"),
                                         port=port)
        return self.monitor

    def serve_registry(self, port: int = 0) -> str:
        """Start the checkpoint registry (mutual TLS) in this process; returns host:port."""
        from fedehr.server.registry.service import start_registry

        cfg = self.config
        self.registry, bound = start_registry(cfg.workdir, cfg.pki, host="127.0.0.1",
                                              port=port, audit_path=cfg.audit_path)
        return f"127.0.0.1:{bound}"

    def site_metrics_url(self, name: str) -> str | None:
        """Where the site daemon of `name` serves its metrics (None: not configured)."""
        port = yaml.safe_load(self.site_yamls[name].read_text()).get("metrics_port")
        return None if port is None else f"http://127.0.0.1:{port}"

    def start_site(self, name: str, *, wait: bool = True) -> None:
        """`fedehr site start --config <site.yaml>` as its own program."""
        path = self.site_yamls[name]
        site = yaml.safe_load(path.read_text())
        if self.sites_allow_clientapp and self.clientapp not in (None, CLIENTAPP):
            self._allow_clientapp(path, site)
        env = {**os.environ, **self.site_env}
        self.supervisor.start(
            f"site-{name}", [sys.executable, "-m", "fedehr.shared.cli", "site", "start",
                             "--config", str(path), "--isolation", self.isolation],
            log=self.root / "site-state" / f"{name}.daemon.log", env=env)
        if wait:
            self.wait_site(name)

    def wait_site(self, name: str) -> None:
        """Until the site daemon of `name` serves its worker port (fails if it exits)."""
        port = int(yaml.safe_load(self.site_yamls[name].read_text())["port"])
        wait_for_port("127.0.0.1", port, timeout=90, proc=self.supervisor.procs[f"site-{name}"],
                      log=self.root / "site-state" / f"{name}.daemon.log")

    def _allow_clientapp(self, path: Path, site: dict) -> None:
        approval = site.setdefault("approval", {})
        # site.yaml's default allowlist (fedehr.client.config.INSTALLED_CLIENTAPPS), spelled
        # out: the server side never imports the hospital side.
        allowed = approval.setdefault("clientapps", [CLIENTAPP, SECURE_CLIENTAPP])
        if self.clientapp not in allowed:
            allowed.append(self.clientapp)
            write_text(path, yaml.safe_dump(site, sort_keys=False))

    def site_exit_code(self, name: str, timeout: float) -> int | None:
        proc = self.supervisor.procs[f"site-{name}"]
        with contextlib.suppress(Exception):
            return proc.wait(timeout=timeout)
        return None

    def kill_site_node(self, name: str) -> None:
        """SIGKILL the hospital's SuperNode, as a crash would; its daemon restarts it."""
        pids = json.loads((self.root / "site-state" / name / "site.pid").read_text())
        os.killpg(int(pids[f"supernode-{name}"]), signal.SIGKILL)

    def kill_server(self) -> None:
        """SIGKILL the SuperLink and its ServerApp, as a crash of the server machine would."""
        for name in [n for n in self.supervisor.procs if n == "superlink" or
                     n.startswith("log-")]:
            self.supervisor.kill(name)
        _kill_matching("flwr-serverapp", str(self.config.flwr_home))

    def launch(self, *, resume: bool = False) -> str:
        cfg = self.config
        run_id = runs.launch(cfg, self.fed_yaml, resume=resume, clientapp=self.clientapp,
                             serverapp=self.serverapp)
        runs.follow_log(self.supervisor, cfg, run_id)
        return run_id

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        if self.registry is not None:
            self.registry.stop(grace=2)
            self.registry = None
        self.supervisor.stop_all()
        _kill_matching("flwr-serverapp", str(self.config.flwr_home))


def _deep_update(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _kill_matching(program: str, marker: str) -> None:
    """Kill leftover Flower app processes of this federation (found via /proc)."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
            if program in cmd and marker in environ:
                os.kill(int(proc.name), signal.SIGKILL)
