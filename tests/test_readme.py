"""The README stays true to the tree: every Makefile target and every folder of its map."""

from __future__ import annotations

import re

from paths import ROOT

README = (ROOT / "README.md").read_text()


def makefile_targets() -> list[str]:
    """The targets `make help` lists (those with a `## ` description)."""
    text = (ROOT / "Makefile").read_text()
    return re.findall(r"(?m)^([a-zA-Z0-9_-]+):.*## ", text)


def test_every_make_target_is_in_the_readme():
    targets = makefile_targets()
    assert len(targets) > 20, targets  # the parse found the targets
    missing = [t for t in targets if f"make {t}`" not in README]
    assert not missing, f"Makefile targets the README does not mention: {missing}"


def test_the_map_names_folders_that_exist():
    section = README.split("## Map", 1)[1].split("\n## ", 1)[0]
    diagram = section.split("```", 2)[1]
    rows = re.findall(r"(?m)^\| `([a-z_]+)/` \|", section)  # the table's first column
    named = set(re.findall(r"(?<![\w/.])([a-z_]+)/", diagram)) | set(rows)
    assert {"training", "model_store", "serving", "handlers", "client", "deploy"} <= named
    for folder in named:
        assert (ROOT / folder).is_dir(), f"the README's map names {folder}/, which does not exist"
