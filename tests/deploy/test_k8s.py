"""Kubernetes manifests: every overlay (and each optional component) is rendered
with `kubectl kustomize`, every rendered object is validated offline against the
Kubernetes JSON schemas of pinned versions (kubernetes-validate, strict: unknown
fields fail), and the project's rules are checked on top: images pinned, probes,
resources, non-root with a read-only root filesystem, the gateway sidecar in
front of TorchServe (its config from deploy/gateway/, keys from a Secret, the only
ports in the Service and the NetworkPolicy), management and health ports never in
a Service. The KServe example's pod spec is validated as a Pod.
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
from tests.support import gateway as gw

K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve" / "inferenceservice.yaml"
OVERLAYS = ["cpu", "gpu"]
COMPONENTS = ["prometheus-operator", "hpa-queue-latency"]
# Oldest and newest Kubernetes minor versions the manifests are validated against.
K8S_VERSIONS = ["1.29.0", "1.33.0"]
MANAGEMENT_PORT = 8081
PROBE_CMD = "latentserve-probe"
GATEWAY_PORTS = {  # container port names -> what deploy/gateway/nginx.conf listens on
    "http-api": gw.PROD_API_PORT,
    "http-health": gw.PROD_HEALTH_PORT,
    "http-metrics": gw.PROD_METRICS_PORT,
}
KEYS_EXAMPLE = K8S / "examples" / "api-keys.secret.yaml"


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
            "ConfigMap",  # TorchServe's config
            "ConfigMap",  # the gateway's
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "NetworkPolicy",
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


def torchserve(spec: dict) -> dict:
    return next(c for c in spec["containers"] if c["name"] == "torchserve")


def gateway(spec: dict) -> dict:
    return next(c for c in spec["containers"] if c["name"] in ("gateway", "kserve-container"))


def check_image_resources_security(c: dict, where: str) -> None:
    image = c["image"]
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and tag and tag != "latest", f"{where}: image {image} must be pinned"
    assert "@sha256:" in image or re.search(r"\d+\.\d+", tag), f"{where}: versioned tag"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= c["resources"][kind].keys(), f"{where}: {kind}"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]


def check_container_rules(container: dict, where: str) -> None:
    """TorchServe's container."""
    check_image_resources_security(container, where)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container, f"{where}: {probe} missing"
        # readiness is per model (TorchServe's /ping is Healthy without workers)
        assert container[probe]["exec"]["command"][0] == PROBE_CMD, f"{where}: {probe}"
        assert container[probe]["timeoutSeconds"] >= 5
    assert container["readinessProbe"]["exec"]["command"][1] == "ready"
    assert container["startupProbe"]["exec"]["command"][1] == "ready"
    assert container["livenessProbe"]["exec"]["command"][1] == "live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "cold start allowance"
    # TorchServe listens on loopback only: no container port to declare
    assert not container.get("ports"), f"{where}: TorchServe must not declare ports"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/home/model-server/work"} <= mounts, "writable dirs TorchServe needs"


def check_gateway_rules(spec: dict, where: str) -> None:
    c = gateway(spec)
    check_image_resources_security(c, where)
    assert c["image"].startswith("nginx:"), "the official nginx image"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert sorted(ports.values()) == sorted(GATEWAY_PORTS.values()), ports
    if c["name"] == "gateway":  # KServe names its routed port http1
        assert ports == GATEWAY_PORTS
    # probes: plain HTTP on the health port, no key
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] == "http-health", f"{where}: {probe}"
    # the config from deploy/gateway/, the keys from the Secret at the path auth.js reads
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    conf = c["command"][c["command"].index("-c") + 1]
    assert "configMap" in mounts[str(Path(conf).parent)], f"{where}: {conf}"
    assert "latentserve-gateway" in mounts[str(Path(conf).parent)]["configMap"]["name"]
    keys_dir = str(Path(gw.PROD_KEYS_FILE).parent)
    secret = mounts[keys_dir]["secret"]
    assert secret["secretName"] == "latentserve-api-keys" and secret["defaultMode"] == 0o440
    prefix = c["command"][c["command"].index("-p") + 1].rstrip("/")
    assert "emptyDir" in mounts[prefix], f"{where}: nginx's prefix must be writable"
    # nginx finishes its requests before TorchServe begins to stop
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pre_stop < int(torchserve(spec)["lifecycle"]["preStop"]["exec"]["command"][1])


def check_pod_rules(spec: dict, where: str) -> None:
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0 and sc["runAsGroup"] > 0
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert sorted(c["name"] for c in spec["containers"]) == sorted(
        [torchserve(spec)["name"], gateway(spec)["name"]]
    )
    ts = torchserve(spec)
    for mount in ts["volumeMounts"]:
        if mount["mountPath"] in ("/tmp", "/home/model-server/work"):
            assert "emptyDir" in volumes[mount["name"]], f"{where}: {mount['mountPath']}"
    # the preStop sleep plus the entrypoint's stop timeout fit in the grace period
    env = {e["name"]: e.get("value") for e in ts.get("env", [])}
    pre_stop = int(ts["lifecycle"]["preStop"]["exec"]["command"][1])
    stop_timeout = int(env.get("TS_STOP_TIMEOUT", 25))
    assert pre_stop + stop_timeout < spec["terminationGracePeriodSeconds"], where
    check_container_rules(ts, where)
    check_gateway_rules(spec, where)


def test_pod_rules(overlay):
    name, objs = overlay
    check_pod_rules(pod_spec(objs), name)


def test_service_exposes_the_gateway_api_and_metrics_only(overlay):
    _, objs = overlay
    for svc in by_kind(objs, "Service"):
        ports = svc["spec"]["ports"]
        targets = {p.get("targetPort") for p in ports} | {p["port"] for p in ports}
        assert MANAGEMENT_PORT not in targets and "management" not in str(targets)
        assert "http-health" not in targets and gw.PROD_HEALTH_PORT not in targets
        assert {p["port"]: p["targetPort"] for p in ports} == {
            8080: "http-api",
            8082: "http-metrics",
        }
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert svc["spec"]["selector"].items() <= pod_labels(objs).items()


def test_network_policy_admits_only_the_gateway_api_and_metrics(overlay):
    _, objs = overlay
    policy = one(objs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(objs).items()
    (rule,) = policy["spec"]["ingress"]
    assert {(p["port"], p["protocol"]) for p in rule["ports"]} == {
        (GATEWAY_PORTS["http-api"], "TCP"),
        (GATEWAY_PORTS["http-metrics"], "TCP"),
    }
    annotations = one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(GATEWAY_PORTS["http-metrics"])


def test_gateway_config_map_is_deploy_gateway(overlay):
    _, objs = overlay
    (cm,) = [c for c in by_kind(objs, "ConfigMap") if "nginx.conf" in c["data"]]
    assert cm["data"] == {
        "nginx.conf": gw.NGINX_CONF.read_text(),
        "auth.js": gw.AUTH_JS.read_text(),
    }
    volumes = {v["name"]: v for v in pod_spec(objs)["volumes"]}
    assert volumes["gateway-config"]["configMap"]["name"] == cm["metadata"]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_api_keys_example_secret_validates_and_holds_no_key(version):
    (secret,) = [d for d in yaml.safe_load_all(KEYS_EXAMPLE.read_text()) if d]
    validate(secret, version)
    assert secret["metadata"]["name"] == "latentserve-api-keys"
    assert Path(gw.PROD_KEYS_FILE).name in secret["stringData"]  # the file auth.js reads
    for line in secret["stringData"]["keys"].splitlines():
        assert not line.strip() or line.strip().startswith("#"), "never a real key in git"


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
    (cm,) = [c for c in by_kind(objs, "ConfigMap") if "config.properties" in c["data"]]
    volumes = {v["name"]: v for v in pod_spec(objs)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["data"]["config.properties"] == tsproc.PROD_CONFIG.read_text()
    env = {e["name"]: e.get("value") for e in torchserve(pod_spec(objs))["env"]}
    mount = next(m for m in torchserve(pod_spec(objs))["volumeMounts"] if m["name"] == "config")
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
    container = torchserve(spec)
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
    assert torchserve(cpu)["image"].endswith(":0.1.0-cpu")


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
    assert annotations["prometheus.kserve.io/port"] == str(GATEWAY_PORTS["http-metrics"])
    predictor = isvc["spec"]["predictor"]
    assert "pytorch" not in predictor and "model" not in predictor, "custom container only"
    # the predictor is a PodSpec plus KServe's scaling fields: validate it as a Pod
    spec = {k: v for k, v in copy.deepcopy(predictor).items() if k not in KSERVE_PREDICTOR_ONLY}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "latentserve"}, "spec": spec}
    for version in K8S_VERSIONS:
        validate(pod, version)
    # KServe routes to the first container's first port: the gateway's API
    first = spec["containers"][0]
    assert first["name"] == "kserve-container" and first["image"].startswith("nginx:")
    assert first["ports"][0]["containerPort"] == GATEWAY_PORTS["http-api"]
    spec.setdefault("automountServiceAccountToken", False)
    check_pod_rules(spec, "kserve")
    # same probes, resources, security and commands as the Kubernetes base
    base = pod_spec(render(K8S / "overlays" / "cpu"))
    keys = ("startupProbe", "readinessProbe", "livenessProbe", "securityContext", "resources")
    for key in (*keys, "lifecycle"):
        assert torchserve(spec).get(key) == torchserve(base).get(key), key
    for key in (*keys, "lifecycle", "command", "image", "volumeMounts"):
        assert gateway(spec).get(key) == gateway(base).get(key), key
