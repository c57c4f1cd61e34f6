"""`make schema`: write the JSON Schema of every request/response model to docs/api/.

    python -m serving.schema [OUT_DIR]    # default docs/api

One file per model (`<operation>.request.json`, `<operation>.response.json`,
`error.json`), each with the limits of handlers/limits.py baked in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from handlers.wire.json_schemas import REQUESTS, RESPONSES, ErrorResponse
from paths import DOCS


def schemas() -> dict[str, dict]:
    out = {}
    for op, model in REQUESTS.items():
        out[f"{op}.request.json"] = model.model_json_schema()
    for op, model in RESPONSES.items():
        out[f"{op}.response.json"] = model.model_json_schema(mode="serialization")
    out["error.json"] = ErrorResponse.model_json_schema(mode="serialization")
    return out


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in schemas().items():
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else DOCS / "api"
    for path in write(out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
