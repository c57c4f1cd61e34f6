"""Answers of two model formats (or two runs) compared as JSON trees."""

from __future__ import annotations


def assert_close_tree(a, b, path: str = "") -> None:
    """Same structure; floats within float32 tolerance (1e-4 absolute + relative), the
    rest equal. `path` names the first difference."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(a), (path, a, b)
    else:
        assert a == b, path
