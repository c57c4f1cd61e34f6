"""Kubernetes manifests: every overlay (and each optional component) is rendered
with `kubectl kustomize`, every rendered object is validated offline against the
Kubernetes JSON schemas of pinned versions (kubernetes-validate, strict: unknown
fields fail), and the project's rules are checked on top: images pinned, probes,
resources, non-root with a read-only root filesystem, management port never in a
Service. The KServe example's pod spec is validated as a Pod.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from paths import DEPLOY
from tests.deploy import tsproc

K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve" / "inferenceservice.yaml"
OVERLAYS = ["cpu", "gpu"]
COMPONENTS = ["prometheus-operator", "hpa-queue-latency"]
# Oldest and newest Kubernetes minor versions the manifests are validated against.
K8S_VERSIONS = ["1.29.0", "1.33.0"]
MANAGEMENT_PORT = 8081
PROBE_CMD = "latentserve-probe"


def kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail(
            "kubectl not found: the manifests are rendered with `kubectl kustomize` "
            "(kubectl >= 1.27, kustomize v5). Install kubectl from the Kubernetes package "
            "repository (https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/) "
            "or the Google Cloud SDK apt repository (package `kubectl`)."
        )
    out = subprocess.run([exe, "version", "--client", "-o", "json"], capture_output=True, text=True)
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    if not re.match(r"v[5-9]\.", version):
        pytest.fail(f"kubectl's kustomize is {version or 'unknown'}; v5 or newer is needed")
    return exe


def render(directory: Path) -> list[dict]:
    r = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def render_with_components(tmp_path: Path, overlay: str, components: list[str]) -> list[dict]:
    """An overlay plus components, as an operator's own kustomization would add them."""
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731  (kustomize refuses absolute paths)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(K8S / "overlays" / overlay)],
        "components": [rel(K8S / "components" / c) for c in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(tmp_path)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str) -> dict:
    (obj,) = by_kind(objs, kind)
    return obj


def validate(obj: dict, version: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {path}: {e.message}")


# ---- schema validation ------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates(overlay, version):
    name, objs = overlay
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
        ]
    ), name
    for obj in objs:
        validate(obj, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_components_render_and_validate(tmp_path, version):
    objs = render_with_components(tmp_path, "cpu", COMPONENTS)
    for obj in objs:
        if obj["kind"] == "ServiceMonitor":
            continue  # a CRD: no schema in Kubernetes; checked below
        validate(obj, version)
    # prometheus-operator: a ServiceMonitor on the Service's metrics port, no annotations
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    labels = svc["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    metrics_ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert metrics_ports[endpoint["port"]] == 8082
    annotations = one(objs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert "prometheus.io/scrape" not in annotations
    # hpa-queue-latency: CPU plus the adapter's pod metric
    hpa = one(objs, "HorizontalPodAutoscaler")
    types = [m["type"] for m in hpa["spec"]["metrics"]]
    assert types == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == adapter_metric_name()


def adapter_metric_name() -> str:
    values = K8S / "components" / "hpa-queue-latency" / "prometheus-adapter-values.yaml"
    (rule,) = yaml.safe_load(values.read_text())["rules"]["custom"]
    return rule["name"]["as"]


def test_adapter_rule_reads_torchserve_series():
    values = K8S / "components" / "hpa-queue-latency" / "prometheus-adapter-values.yaml"
    (rule,) = yaml.safe_load(values.read_text())["rules"]["custom"]
    series = set(re.findall(r"\b(ts_[a-z_]+)\{", rule["metricsQuery"] + rule["seriesQuery"]))
    # TorchServe 0.12's frontend counters in Prometheus mode (declared in its metrics config)
    assert series == {"ts_queue_latency_microseconds", "ts_inference_requests_total"}
    metrics = yaml.safe_load(tsproc.METRICS_CONFIG.read_text())
    declared = {m["name"] for m in metrics["ts_metrics"]["counter"]}
    assert series <= declared, f"{tsproc.METRICS_CONFIG} must declare {series - declared}"


# ---- project rules ----------------------------------------------------------------


def pod_spec(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]


def check_container_rules(container: dict, where: str) -> None:
    image = container["image"]
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and tag and tag != "latest", f"{where}: image {image} must be pinned"
    assert "@sha256:" in image or re.search(r"\d+\.\d+", tag), f"{where}: versioned tag"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container, f"{where}: {probe} missing"
        # token auth guards every HTTP path: probes must run the key-aware script
        assert container[probe]["exec"]["command"][0] == PROBE_CMD, f"{where}: {probe}"
        assert container[probe]["timeoutSeconds"] >= 5
    assert container["readinessProbe"]["exec"]["command"][1] == "ready"
    assert container["startupProbe"]["exec"]["command"][1] == "ready"
    assert container["livenessProbe"]["exec"]["command"][1] == "live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "cold start allowance"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), f"{where}: {kind}"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    ports = {p["containerPort"] for p in container["ports"]}
    assert MANAGEMENT_PORT not in ports and {8080, 8082} <= ports
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/home/model-server/work"} <= mounts, "writable dirs TorchServe needs"


def check_pod_rules(spec: dict, where: str) -> None:
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0 and sc["runAsGroup"] > 0
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    for mount in container["volumeMounts"]:
        if mount["mountPath"] in ("/tmp", "/home/model-server/work"):
            assert "emptyDir" in volumes[mount["name"]], f"{where}: {mount['mountPath']}"
    # the preStop sleep plus the entrypoint's stop timeout fit in the grace period
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    stop_timeout = int(env.get("TS_STOP_TIMEOUT", 25))
    assert pre_stop + stop_timeout < spec["terminationGracePeriodSeconds"], where
    check_container_rules(container, where)


def test_pod_rules(overlay):
    name, objs = overlay
    check_pod_rules(pod_spec(objs), name)


def test_service_exposes_inference_and_metrics_only(overlay):
    _, objs = overlay
    for svc in by_kind(objs, "Service"):
        ports = svc["spec"]["ports"]
        targets = {p.get("targetPort") for p in ports} | {p["port"] for p in ports}
        assert MANAGEMENT_PORT not in targets and "management" not in str(targets)
        assert {p["port"] for p in ports} == {8080, 8082}
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert svc["spec"]["selector"].items() <= pod_labels(objs).items()


def pod_labels(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_pdb_hpa_and_configmap_wiring(overlay):
    name, objs = overlay
    deployment = one(objs, "Deployment")
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(objs).items()
    hpa = one(objs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # the ConfigMap (hash-suffixed: a config change rolls the pods) is the production file
    cm = one(objs, "ConfigMap")
    volumes = {v["name"]: v for v in pod_spec(objs)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["data"]["config.properties"] == tsproc.PROD_CONFIG.read_text()
    env = {e["name"]: e.get("value") for e in pod_spec(objs)["containers"][0]["env"]}
    mount = next(
        m for m in pod_spec(objs)["containers"][0]["volumeMounts"] if m["name"] == "config"
    )
    assert env["TS_CONFIG_FILE"] == f"{mount['mountPath']}/config.properties"
    # one namespace object per overlay, everything inside it, pods held to "restricted"
    ns = one(objs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == ns["metadata"]["name"]


def test_base_config_copy_matches_the_production_config():
    copy_ = K8S / "base" / "config.production.properties"
    assert copy_.read_bytes() == tsproc.PROD_CONFIG.read_bytes(), (
        f"{copy_} differs from {tsproc.PROD_CONFIG}: run `make k8s-config`"
    )


def test_gpu_overlay():
    objs = render(K8S / "overlays" / "gpu")
    spec = pod_spec(objs)
    (container,) = spec["containers"]
    assert container["image"].endswith(":0.1.0-gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TS_CONFIG_OVERRIDES"] == "number_of_gpu=1"
    cpu = pod_spec(render(K8S / "overlays" / "cpu"))
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert cpu["containers"][0]["image"].endswith(":0.1.0-cpu")


def test_probe_path_and_image_user_match_the_dockerfiles():
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        text = (DEPLOY / "docker" / dockerfile).read_text()
        assert f"/usr/local/bin/{PROBE_CMD}" in text
        assert "USER 10001:10001" in text
    spec = pod_spec(render(K8S / "overlays" / "cpu"))
    assert spec["securityContext"]["runAsUser"] == 10001


# ---- KServe -------------------------------------------------------------------------

KSERVE_PREDICTOR_ONLY = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleMetricType",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def test_kserve_inference_service():
    (isvc,) = [d for d in yaml.safe_load_all(KSERVE.read_text()) if d]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["prometheus.kserve.io/port"] == "8082"
    predictor = isvc["spec"]["predictor"]
    assert "pytorch" not in predictor and "model" not in predictor, "custom container only"
    # the predictor is a PodSpec plus KServe's scaling fields: validate it as a Pod
    spec = {k: v for k, v in copy.deepcopy(predictor).items() if k not in KSERVE_PREDICTOR_ONLY}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "latentserve"}, "spec": spec}
    for version in K8S_VERSIONS:
        validate(pod, version)
    (container,) = spec["containers"]
    assert container["ports"][0]["containerPort"] == 8080  # KServe routes to the first port
    spec.setdefault("automountServiceAccountToken", False)
    check_pod_rules(spec, "kserve")
    # same probes, resources and security as the Kubernetes base
    base = pod_spec(render(K8S / "overlays" / "cpu"))["containers"][0]
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "securityContext", "resources"):
        assert container[key] == base[key], key
