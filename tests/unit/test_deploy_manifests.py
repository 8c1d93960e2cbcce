"""deploy/'s compose file, Kubernetes manifests and Grafana dashboard, checked without a Docker
engine or a cluster (none runs here): every Kubernetes resource against the API schemas
(kubernetes-validate, strict), the example overlay rendered as Kustomize would and validated,
every command a container runs parsed by the real CLI, every MES_* setting a real setting,
every scrape target a role that serves metrics, and every metric the dashboard queries one the
MES exports."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY
from typer.testing import CliRunner

import mes.main  # noqa: F401  # every module that defines metrics, imported
from mes.cli import app as cli
from mes.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31"  # NetworkPolicy endPort needs 1.25+
IMAGE = "fab-mes"

# --- Kustomize, the part these manifests use -----------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as far as these patches need it: maps merge, lists of named items
    (containers, ports) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(i, dict) and "name" in i for i in [*base, *patch]):
        merged = {item["name"]: item for item in base}
        for item in patch:
            name = item["name"]
            merged[name] = _merge(merged[name], item) if name in merged else item
        return list(merged.values())
    return copy.deepcopy(patch)


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    template = doc.get("spec", {}).get("template")
    return template["spec"] if template else None


def render(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build folder`` for the fields deploy/k8s uses: resources (files and
    kustomizations), labels (metadata only), namespace, images, patches by kind and name."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text("utf-8"))
    known = {"apiVersion", "kind", "labels", "resources", "namespace", "images", "patches"}
    assert set(kustomization) <= known, f"render() does not know {set(kustomization) - known}"
    docs: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        target = (folder / entry).resolve()
        assert target.exists(), f"{folder / entry} is listed but missing"
        docs.extend(render(target) if target.is_dir() else _documents(target))
    for patch_entry in kustomization.get("patches", []):
        for patch in _documents(folder / patch_entry["path"]):
            matches = [i for i, d in enumerate(docs) if _key(d) == _key(patch)]
            assert matches, f"{patch_entry['path']} patches {_key(patch)}, which is not there"
            docs[matches[0]] = _merge(docs[matches[0]], patch)
    for doc in docs:
        for label in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
        if "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        spec = _pod_spec(doc)
        for image in kustomization.get("images", []):
            for container in spec["containers"] if spec else []:
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def _base_files() -> list[Path]:
    return sorted((K8S / "base").glob("*.yaml"))


@pytest.mark.parametrize("path", _base_files(), ids=lambda p: p.name)
def test_every_base_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    if path.name == "kustomization.yaml":
        pytest.skip("the kustomization is Kustomize's, not the API's")
    for doc in _documents(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_of_the_base() -> None:
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in _base_files()} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(files)


def test_the_example_overlay_renders_to_valid_resources() -> None:
    docs = render(K8S / "overlays" / "example")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    by_key = {_key(d): d for d in docs}
    assert len(by_key) == len(docs), "two resources of the same kind and name"
    assert {d["metadata"]["namespace"] for d in docs} == {"fab-mes"}
    images = {c["image"] for d in docs if (s := _pod_spec(d)) for c in s["containers"]}
    assert images == {"registry.fab.example/it/fab-mes:0.1.0"}
    dispatcher = by_key["Deployment", "mes-dispatcher"]
    assert _pod_spec(dispatcher)["containers"][0]["args"][-1] == "F1,F2"  # type: ignore[index]
    assert by_key["Deployment", "mes-api"]["spec"]["replicas"] == 3
    tools = by_key["NetworkPolicy", "mes-tool-network"]["spec"]["egress"][0]["to"][0]
    assert tools["ipBlock"]["cidr"] == "172.20.64.0/20"


def _deployments() -> list[dict[str, Any]]:
    return [d for d in render(K8S / "base") if d["kind"] == "Deployment"]


def test_every_role_has_probes_resources_a_budget_and_the_policy_label() -> None:
    docs = render(K8S / "base")
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for deployment in _deployments():
        spec = _pod_spec(deployment)
        assert spec is not None
        container = spec["containers"][0]
        name = deployment["metadata"]["name"]
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}, name
        assert "memory" in container["resources"]["limits"], name
        assert container["livenessProbe"], name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        # The egress policy selects pods by this label: a pod without it would be unconfined.
        assert labels["app.kubernetes.io/part-of"] == "fab-mes", name
        assert deployment["spec"]["replicas"] >= 2, f"{name}: one replica has no standby"
        covering = [
            b
            for b in budgets
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
            and b["spec"]["minAvailable"] >= 1
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
    api = _pod_spec(next(d for d in _deployments() if d["metadata"]["name"] == "mes-api"))
    assert api is not None
    probes = api["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_only_the_adapters_may_reach_the_tool_network() -> None:
    docs = render(K8S / "base")
    policy = next(d for d in docs if _key(d) == ("NetworkPolicy", "mes-tool-network"))
    selector = policy["spec"]["podSelector"]["matchLabels"].items()
    reaching = {
        d["metadata"]["name"]
        for d in _deployments()
        if selector <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    assert reaching == {"mes-adapters-0", "mes-adapters-1"}
    # Every other policy's egress stays inside the cluster (no ipBlock).
    others = [d for d in docs if d["kind"] == "NetworkPolicy" and d is not policy]
    for other in others:
        for rule in other["spec"].get("egress", []):
            assert all("ipBlock" not in peer for peer in rule.get("to", [])), other


# --- what the containers run -----------------------------------------------------------------


def _cli_accepts(args: list[str]) -> None:
    """The real ``mes`` command parses ``args`` (``--help`` stops it before it runs)."""
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, f"mes {' '.join(args)}: {result.output}"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))


def _mes_commands() -> list[list[str]]:
    commands = [
        c["args"] for d in render(K8S / "base") if (s := _pod_spec(d)) for c in s["containers"]
    ]
    for service in _compose()["services"].values():
        entrypoint = service.get("entrypoint")
        if entrypoint and entrypoint[:2] == ["sh", "-c"]:
            commands += [shlex.split(part)[1:] for part in entrypoint[2].split("&&")]
        elif service.get("image", "").startswith(IMAGE) and not entrypoint:
            commands.append(service["command"])
    return commands


def test_every_command_the_containers_run_is_one_the_cli_accepts() -> None:
    commands = _mes_commands()
    assert len(commands) >= 8
    for args in commands:
        _cli_accepts(args)


def _settings_in_manifests() -> dict[str, str]:
    found: dict[str, str] = {}
    for doc in render(K8S / "base"):
        if doc["kind"] in ("ConfigMap", "Secret"):
            found.update(doc.get("data", {}) | doc.get("stringData", {}))
    for service in _compose()["services"].values():
        found.update(service.get("environment") or {})
    return {k: str(v) for k, v in found.items() if k.startswith("MES_")}


def test_every_setting_the_manifests_set_is_a_real_one_with_a_valid_value() -> None:
    values = _settings_in_manifests()
    fields = {f"MES_{name.upper()}" for name in Settings.model_fields}
    unknown = set(values) - fields
    assert not unknown, f"no such settings (typos are ignored silently at run time): {unknown}"
    plain = {k.removeprefix("MES_").lower(): v for k, v in values.items() if "${" not in v}
    Settings(_env_file=None, **plain)  # type: ignore[call-arg]  # every value parses


def test_compose_roles_share_one_secret_and_every_scrape_target_serves_metrics() -> None:
    services = _compose()["services"]
    apis = [n for n, s in services.items() if s.get("command") == ["serve"]]
    assert len(apis) == 2
    secrets = {services[n]["environment"]["MES_JWT_SECRET"] for n in apis}
    assert len(secrets) == 1
    ports: set[str] = {f"{n}:8000" for n in apis}
    for name, service in services.items():
        port = (service.get("environment") or {}).get("MES_METRICS_PORT")
        if port:
            host = service.get("network_mode", f"service:{name}").removeprefix("service:")
            ports.add(f"{host}:{port}")
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    assert targets == ports
    candidates = [
        n for n, s in services.items() if s.get("command", [])[:2] == ["dispatcher", "run"]
    ]
    shards = [n for n, s in services.items() if s.get("command", [])[:2] == ["adapters", "run"]]
    assert (len(candidates), len(shards)) == (2, 2)
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert set(re.findall(r"server (\S+):8000", nginx)) == set(apis)
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source


# --- the dashboard -----------------------------------------------------------------------------


def _exported_names() -> set[str]:
    """The sample names the MES's metrics can produce (a counter ``x`` gives ``x_total``)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "fab-operations.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    return {m for e in exprs for m in re.findall(r"\b(?:mes|process)_[a-z_]+\b", e)}


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    missing = _dashboard_metrics() - _exported_names()
    assert not missing, f"the dashboard queries metrics nobody exports: {missing}"


def test_the_dashboard_shows_every_mes_metric() -> None:
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", m) for m in _dashboard_metrics()}
    ours = {f.name for f in REGISTRY.collect() if f.name.startswith("mes_")}
    assert ours - shown == set()
