"""Static checks of deploy/: no container engine or cluster is needed.

What these tests cannot check (no docker daemon, compose plugin or cluster
here): that the images build, that the containers start and talk to each
other, that Grafana renders the dashboard. See docs/deploy.md.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import typer
import yaml

from fedehr.client.config import SiteConfig, load_site_config
from fedehr.server.config import SuperLinkConfig, load_federation_config
from tests.deploy.metric_names import ALL_METRICS, ROUND_SITE_STATES, SERVER_METRICS, SITE_METRICS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fedehr.json"
SITES = ("hospital_a", "hospital_b", "hospital_c")

YAML_FILES = sorted(p for ext in ("*.yml", "*.yaml") for p in DEPLOY.rglob(ext))
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


# -- helpers ---------------------------------------------------------------------------

def _yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict:
    return _compose()["services"]


def _site_services() -> dict:
    return {k: v for k, v in _services().items() if k.startswith("site-")}


def _bind_source(volume: str | dict) -> tuple[str, str]:
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target = volume.split(":")[:2]
    return source, target


def _mounted_config(service: dict, target: str) -> Path:
    for volume in service["volumes"]:
        source, mount = _bind_source(volume)
        if mount == target:
            return (COMPOSE_DIR / source).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _instr(path: Path, name: str) -> list[str]:
    return [rest for word, rest in _dockerfile(path) if word == name]


def _exposed(path: Path) -> set[int]:
    return {int(p.split("/")[0]) for rest in _instr(path, "EXPOSE") for p in rest.split()}


def _k8s_docs() -> dict[str, list[dict]]:
    return {p.name: _yaml_docs(p) for p in sorted(K8S.glob("*.yaml"))}


def _k8s_objects(kind: str) -> list[dict]:
    return [d for docs in _k8s_docs().values() for d in docs if d.get("kind") == kind]


def _k8s_federation_yaml(tmp_path: Path) -> Path:
    (configmap,) = [c for c in _k8s_objects("ConfigMap")
                    if c["metadata"]["name"] == "fedehr-federation"]
    path = tmp_path / "federation.yaml"
    path.write_text(configmap["data"]["federation.yaml"])
    return path


def _systemd_unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (SYSTEMD / "fedehr-site.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]


METRIC = re.compile(r"\bfedehr_[a-z0-9_]+\b")


# -- every file parses -----------------------------------------------------------------

@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_file_parses(path):
    assert _yaml_docs(path), f"{path} is empty"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_file_parses(path):
    assert json.loads(path.read_text())


def test_deploy_has_the_expected_files():
    expected = ["docker/consortium.Dockerfile", "docker/site.Dockerfile",
                "docker/site-cuda.Dockerfile", "compose/docker-compose.yml",
                "kubernetes/kustomization.yaml", "systemd/fedehr-site.service",
                "systemd/fedehr-site.env", "prometheus/prometheus.yml",
                "grafana/dashboards/fedehr.json"]
    missing = [p for p in expected if not (DEPLOY / p).is_file()]
    assert not missing


# -- no secrets ------------------------------------------------------------------------

def test_no_private_key_material_in_deploy():
    material = re.compile(r"PRIVATE KEY|BEGIN CERTIFICATE|ssh-ed25519 AAAA|ecdsa-sha2-\S+ AAAA")
    offenders = [str(p.relative_to(REPO)) for p in DEPLOY.rglob("*")
                 if p.is_file() and material.search(p.read_text(errors="replace"))]
    assert not offenders


def test_kubernetes_pki_secret_holds_placeholders_only():
    (secret,) = _k8s_objects("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert values and all(str(v).startswith("REPLACE_ME") for v in values.values())


# -- Dockerfiles -----------------------------------------------------------------------

def test_cpu_images_use_python_311_slim():
    for name in ("consortium.Dockerfile", "site.Dockerfile"):
        assert _instr(DOCKER / name, "FROM") == ["python:3.11-slim"], name


def test_cuda_image_uses_nvidia_runtime_base_and_python_311():
    path = DOCKER / "site-cuda.Dockerfile"
    (base,) = _instr(path, "FROM")
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    assert any("python3.11" in r for r in _instr(path, "RUN"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_pinned_torch_before_the_project(path):
    runs = _instr(path, "RUN")
    torch = [i for i, r in enumerate(runs) if "torch==2.13.0" in r]
    project = [i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r)]
    assert torch and project and torch[0] < project[0]
    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    uses_cpu_index = any(cpu_index in runs[i] for i in torch)
    assert uses_cpu_index == ("cuda" not in path.name)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copy_sources_exist(path):
    for rest in _instr(path, "COPY"):
        for source in rest.split()[:-1]:
            if not source.startswith("--"):
                assert (REPO / source).exists(), f"{path.name}: COPY {source}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_non_root_user(path):
    users = _instr(path, "USER")
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_healthcheck_curls_healthz_on_the_metrics_port(path):
    (check,) = _instr(path, "HEALTHCHECK")
    assert "curl" in check and "/healthz" in check and "FEDEHR_METRICS_PORT" in check
    env = " ".join(_instr(path, "ENV"))
    port = int(re.search(r"FEDEHR_METRICS_PORT=(\d+)", env).group(1))
    assert port in _exposed(path)


def test_site_images_declare_state_and_data_volumes():
    for name in ("site.Dockerfile", "site-cuda.Dockerfile"):
        volumes = json.loads(_instr(DOCKER / name, "VOLUME")[-1])
        assert "/var/lib/fedehr" in volumes and "/srv/fedehr/data" in volumes


# -- ports agree everywhere ------------------------------------------------------------

def test_superlink_port_agrees_with_code_dockerfile_compose_and_sites():
    port = SuperLinkConfig().port
    assert port == 9093
    fed = load_federation_config(COMPOSE_DIR / "config" / "federation.yaml")
    assert fed.superlink.port == port
    assert port in _exposed(DOCKER / "consortium.Dockerfile")
    published = [str(p).split(":")[-1] for p in _services()["superlink"]["ports"]]
    assert str(port) in published
    for name in SITES:
        site = load_site_config(COMPOSE_DIR / "config" / "sites" / f"{name}.yaml")
        assert site.superlink == f"{fed.superlink.host}:{port}"


def test_site_port_agrees_with_code_and_site_dockerfiles():
    port = SiteConfig(name="x", data=Path("d"), state_dir=Path("s")).port
    assert port == 9094
    for name in SITES:
        assert load_site_config(COMPOSE_DIR / "config" / "sites" / f"{name}.yaml").port == port
    for dockerfile in ("site.Dockerfile", "site-cuda.Dockerfile"):
        assert port in _exposed(DOCKER / dockerfile)


def test_metrics_ports_agree_across_configs_dockerfiles_compose_and_prometheus():
    fed = load_federation_config(COMPOSE_DIR / "config" / "federation.yaml")
    assert fed.metrics_port in _exposed(DOCKER / "consortium.Dockerfile")
    superlink = _services()["superlink"]
    assert int(superlink["environment"]["FEDEHR_METRICS_PORT"]) == fed.metrics_port
    targets = _prometheus_targets()
    assert f"superlink:{fed.metrics_port}" in targets
    for service_name, service in _site_services().items():
        site = load_site_config(_mounted_config(service, "/etc/fedehr/site.yaml"))
        assert site.metrics_port in _exposed(DOCKER / "site.Dockerfile")
        assert f"{service_name}:{site.metrics_port}" in targets
        published = [str(p).split(":")[-1] for p in service["ports"]]
        assert str(site.metrics_port) in published


def test_server_healthcheck_host_is_the_host_the_server_binds_metrics_to():
    # the server serves /metrics and /healthz on superlink.host (server/cli.py)
    fed = load_federation_config(COMPOSE_DIR / "config" / "federation.yaml")
    assert _services()["superlink"]["environment"]["FEDEHR_METRICS_HOST"] == fed.superlink.host
    assert _services()["superlink"]["hostname"] == fed.superlink.host


# -- compose ---------------------------------------------------------------------------

def test_compose_has_the_local_consortium_services():
    services = _services()
    for name in ("pki", "data", "superlink", "prometheus", "grafana"):
        assert name in services, name
    assert sorted(_site_services()) == ["site-hospital-a", "site-hospital-b", "site-hospital-c"]


def test_compose_build_contexts_and_dockerfiles_exist():
    built = [s for s in _services().values() if "build" in s]
    assert built
    for service in built:
        context = (COMPOSE_DIR / service["build"]["context"]).resolve()
        assert context.is_dir() and (context / "pyproject.toml").is_file()
        assert (context / service["build"]["dockerfile"]).is_file()


def test_compose_services_use_the_matching_image():
    services = _services()
    for name in ("pki", "data", "superlink", "run"):
        assert services[name]["build"]["dockerfile"].endswith("consortium.Dockerfile"), name
    for name, service in _site_services().items():
        assert service["build"]["dockerfile"].endswith("site.Dockerfile"), name


def test_compose_external_images_are_pinned():
    for name, service in _services().items():
        if "build" not in service:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), name


def test_compose_bind_mounts_exist_and_named_volumes_are_declared():
    declared = set(_compose().get("volumes") or {})
    checked = 0
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source, _ = _bind_source(volume)
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
            checked += 1
    assert checked


def test_compose_federation_config_loads_with_the_real_schema():
    path = _mounted_config(_services()["superlink"], "/etc/fedehr/federation.yaml")
    fed = load_federation_config(path)
    assert sorted(fed.sites) == list(SITES) and fed.metrics_port is not None


def test_compose_run_service_mounts_the_same_config_and_workdir_as_superlink():
    services = _services()
    assert sorted(services["run"]["volumes"]) == sorted(services["superlink"]["volumes"])


@pytest.mark.parametrize("service_name", ["site-hospital-a", "site-hospital-b",
                                          "site-hospital-c"])
def test_compose_site_config_loads_and_names_its_own_site(service_name):
    service = _services()[service_name]
    site = load_site_config(_mounted_config(service, "/etc/fedehr/site.yaml"))
    assert site.name == service_name.removeprefix("site-").replace("-", "_")
    assert site.auth_key.name == f"{site.name}.key"
    assert site.metrics_port is not None
    # the data it names is inside a read-only mount of the container
    data_mounts = [_bind_source(v)[1] for v in service["volumes"] if str(v).endswith(":ro")]
    assert any(str(site.data).startswith(m + "/") for m in data_mounts)


def test_compose_sites_are_the_sites_of_the_federation_and_of_the_pki_service():
    fed = load_federation_config(COMPOSE_DIR / "config" / "federation.yaml")
    pki_command = " ".join(_services()["pki"]["command"])
    for name in fed.sites:
        assert name in pki_command
    assert f"--host {fed.superlink.host}" in pki_command


# -- every fedehr command used exists in the real CLI ----------------------------------

def _root_command() -> click.Group:
    from fedehr.shared.cli import build_app

    return typer.main.get_command(build_app())


def _split_invocations(tokens: list[str]) -> list[list[str]]:
    """The argument lists of every `fedehr ...` in a tokenised shell command."""
    found, current = [], None
    for token in tokens:
        if token in (";", "&&", "||", "|", "&"):
            current = None
        elif current is not None:
            current.append(token)
        elif token == "fedehr" or token.endswith("/fedehr"):
            current = []
            found.append(current)
    return found


def _shell_invocations(text: str) -> list[list[str]]:
    text = text.replace("$$", "$")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return _split_invocations(list(lexer))


def _all_invocations() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path in DOCKERFILES:  # ENTRYPOINT ["fedehr"] + CMD [...]
        assert json.loads(_instr(path, "ENTRYPOINT")[-1]) == ["fedehr"]
        found.append((path.name, json.loads(_instr(path, "CMD")[-1])))
    for name, service in _services().items():
        command = service.get("command")
        if command is None or "build" not in service:
            continue
        if "entrypoint" in service:  # a shell script
            found += [(f"compose {name}", inv) for inv in _shell_invocations(" ".join(command))]
        else:  # arguments to the image's `fedehr` entrypoint
            found.append((f"compose {name}", list(command)))
    unit = _systemd_unit()["Service"]
    for key in ("ExecStart", "ExecStop"):
        for line in unit.get(key, []):
            found += [(f"systemd {key}", inv) for inv in _shell_invocations(line)]
    for kind in ("Deployment", "Job"):
        for obj in _k8s_objects(kind):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                if container["image"].startswith("fedehr/"):
                    found.append((f"k8s {obj['metadata'].get('name', kind)}",
                                  container["args"]))
    return found


def test_every_fedehr_command_in_deploy_exists_in_the_cli():
    root = _root_command()
    invocations = _all_invocations()
    used = set()
    for where, args in invocations:
        group = root.commands.get(args[0])
        assert isinstance(group, click.Group), f"{where}: no group `fedehr {args[0]}`"
        command = group.commands.get(args[1])
        assert command is not None, f"{where}: no command `fedehr {args[0]} {args[1]}`"
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for token in args[2:]:
            if token.startswith("-"):
                assert token.split("=")[0] in options, f"{where}: `fedehr {args[0]} " \
                    f"{args[1]}` has no option {token}"
        used.add(f"{args[0]} {args[1]}")
    assert {"server start", "site start", "site stop", "run start", "pki init", "pki server",
            "pki site", "data synth", "data anchor"} <= used


def test_command_walker_rejects_an_unknown_command():
    root = _root_command()
    (args,) = _shell_invocations("/opt/fedehr/bin/fedehr site launch --config x")
    assert args[:2] == ["site", "launch"]
    assert "launch" not in root.commands["site"].commands


# -- Prometheus, alerts and Grafana ----------------------------------------------------

def _prometheus_targets() -> list[str]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    return [t for job in config["scrape_configs"] for sc in job["static_configs"]
            for t in sc["targets"]]


def test_prometheus_scrapes_the_superlink_and_every_site_service():
    hosts = {t.split(":")[0] for t in _prometheus_targets()}
    assert hosts == {"superlink", *_site_services()}


def test_prometheus_config_files_are_mounted_by_compose():
    mounts = {(COMPOSE_DIR / _bind_source(v)[0]).resolve()
              for v in _services()["prometheus"]["volumes"]}
    assert PROMETHEUS.resolve() in mounts and ALERTS.resolve() in mounts


def test_dashboard_queries_use_only_known_metric_names():
    exprs = _dashboard_exprs()
    assert exprs
    unknown = {m for e in exprs for m in METRIC.findall(e)} - set(ALL_METRICS)
    assert not unknown


def test_alert_rules_use_only_known_metric_names():
    exprs = _alert_exprs()
    assert exprs
    unknown = {m for e in exprs for m in METRIC.findall(e)} - set(ALL_METRICS)
    assert not unknown


def test_dashboard_label_selectors_and_legends_use_known_labels():
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            labels = {label for m in METRIC.findall(target["expr"]) for label in ALL_METRICS[m]}
            legend = set(re.findall(r"{{\s*(\w+)\s*}}", target.get("legendFormat", "")))
            assert legend <= labels, f"{panel['title']}: legend {legend - labels}"
            for state in re.findall(r'state="(\w+)"', target["expr"]):
                assert state in ROUND_SITE_STATES


def test_dashboard_has_the_required_panels():
    exprs = " ".join(_dashboard_exprs())
    for metric in ("fedehr_rounds_completed_total", "fedehr_round_sites", "fedehr_site_epsilon",
                   "fedehr_anchor_loss", "fedehr_site_eval_loss",
                   "fedehr_updates_rejected_total"):
        assert re.search(rf"\b{metric}\b", exprs), metric


def test_grafana_provisioning_points_at_the_dashboard_and_datasource():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml")
                                   .read_text())["datasources"]
    dash = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert uids == {datasource["uid"]}
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "fedehr.yml")
                                 .read_text())["providers"]
    grafana_mounts = dict(_bind_source(v)[::-1] for v in _services()["grafana"]["volumes"])
    assert (COMPOSE_DIR / grafana_mounts[provider["options"]["path"]]).resolve() == \
        DASHBOARD.parent.resolve()


def _exported_metric_names(module: Path) -> set[str]:
    """Metric family names a collector module yields (string literals `fedehr_...`);
    a counter family `x` is exposed as `x_total`."""
    names = {node.value for node in ast.walk(ast.parse(module.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and re.fullmatch(r"fedehr_[a-z0-9_]+", node.value)}
    return names | {f"{n}_total" for n in names}


@pytest.mark.parametrize("module,names", [("server/metrics.py", SERVER_METRICS),
                                          ("client/metrics.py", SITE_METRICS)])
def test_metric_names_are_exported_by_the_code(module, names):
    path = REPO / module
    if not path.is_file():
        pytest.skip(f"{module} does not exist yet")
    exported = _exported_metric_names(path)
    missing = set(names) - exported
    assert not missing, f"{module} does not export {sorted(missing)}"


# -- Kubernetes ------------------------------------------------------------------------

def test_kubernetes_objects_have_api_version_kind_and_name():
    docs = [(name, d) for name, ds in _k8s_docs().items() for d in ds
            if name != "kustomization.yaml"]
    assert docs
    for name, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), name
        metadata = doc.get("metadata", {})
        # a per-run Job is created with `kubectl create` and a generated name
        assert metadata.get("name") or (doc["kind"] == "Job" and metadata.get("generateName"))


def test_kubernetes_has_the_consortium_objects():
    kinds = {d["kind"] for ds in _k8s_docs().values() for d in ds}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service",
            "PersistentVolumeClaim", "Job", "Kustomization"} <= kinds


def test_kustomization_lists_existing_files_but_not_the_secret_or_job():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert all((K8S / r).is_file() for r in resources)
    assert "secret-pki.yaml" not in resources and "run-job.yaml" not in resources


def test_kubernetes_configmap_federation_loads_with_the_real_schema(tmp_path):
    fed = load_federation_config(_k8s_federation_yaml(tmp_path))
    assert fed.superlink.port == SuperLinkConfig().port and fed.metrics_port is not None


def test_kubernetes_superlink_host_is_the_pods_stable_dns_name(tmp_path):
    fed = load_federation_config(_k8s_federation_yaml(tmp_path))
    (deployment,) = _k8s_objects("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    fqdn = f"{pod['hostname']}.{pod['subdomain']}.{namespace}.svc.cluster.local"
    assert fed.superlink.host == fqdn
    headless = [s for s in _k8s_objects("Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [pod["subdomain"]]


def test_kubernetes_ports_agree_with_the_config(tmp_path):
    fed = load_federation_config(_k8s_federation_yaml(tmp_path))
    (deployment,) = _k8s_objects("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"superlink": fed.superlink.port, "metrics": fed.metrics_port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for service in _k8s_objects("Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_kubernetes_pki_mounts_use_keys_of_the_secret_and_the_pki_layout(tmp_path):
    (secret,) = _k8s_objects("Secret")
    keys = set(secret["stringData"])
    fed = load_federation_config(_k8s_federation_yaml(tmp_path))
    (deployment,) = _k8s_objects("Deployment")
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    items = volume["secret"]["items"]
    assert {i["key"] for i in items} <= keys
    paths = {i["path"] for i in items}
    assert {"ca.pem", "superlink.pem", "superlink.key", "signing/consortium.key"} <= paths
    assert {f"sites/{s}.pub" for s in fed.sites} <= paths
    assert "ca.key" not in keys  # the CA key never enters the cluster


def test_kubernetes_workloads_run_as_non_root():
    for obj in [*_k8s_objects("Deployment"), *_k8s_objects("Job")]:
        context = obj["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds():
    proc = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(proc.stdout) if d}
    assert {"Namespace", "Deployment", "Service"} <= kinds


# -- systemd ---------------------------------------------------------------------------

def test_systemd_unit_has_the_required_keys():
    unit = _systemd_unit()
    service = unit["Service"]
    assert "network-online.target" in " ".join(unit["Unit"]["After"])
    assert service["Restart"] == ["always"]
    assert service["User"][0] not in ("root", "0")
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["true"] and service["PrivateTmp"] == ["true"]
    assert "${FEDEHR_SITE_CONFIG}" in service["ExecStart"][0]
    assert "site start" in service["ExecStart"][0]
    assert unit["Install"]["WantedBy"]


def test_systemd_unit_may_write_the_state_dir_and_nothing_else_it_does_not_own():
    service = _systemd_unit()["Service"]
    writable = " ".join(service["ReadWritePaths"]).split()
    state = f"/var/lib/{service['StateDirectory'][0]}"
    assert state in writable
    assert all(p.startswith(("/var/lib/fedehr", "/var/cache/fedehr")) for p in writable)


def test_systemd_env_file_sets_the_site_config_the_unit_uses():
    env = dict(line.split("=", 1) for line in (SYSTEMD / "fedehr-site.env").read_text()
               .splitlines() if line.strip() and not line.startswith("#"))
    assert env["FEDEHR_SITE_CONFIG"].endswith(".yaml")
    unit = _systemd_unit()["Service"]
    assert unit["EnvironmentFile"][0].endswith("fedehr-site.env")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes(tmp_path):
    # verify insists that ExecStart's binary exists: point it at this checkout's fedehr
    fedehr = shutil.which("fedehr") or str(REPO / ".venv" / "bin" / "fedehr")
    if not Path(fedehr).exists():
        pytest.skip("no fedehr executable to stand in for /opt/fedehr/bin/fedehr")
    text = (SYSTEMD / "fedehr-site.service").read_text()
    unit = tmp_path / "fedehr-site.service"
    unit.write_text(text.replace("/opt/fedehr/bin/fedehr", fedehr))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    # unknown keys are only warnings (exit 0), so the output must be empty too
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stderr
