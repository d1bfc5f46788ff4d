"""The sidecar's committed JSON Schema (docs/sidecar.schema.json) as a real validator: the test
session checks every sidecar an export writes with it (conftest.py), and ``python -m
tests.schema DIR`` checks a folder's sidecars (``make size-report``)."""

import functools
import json
import sys
from pathlib import Path

import jsonschema

from eelbert_export.exporters.base import FORMATS

SCHEMA = Path(__file__).resolve().parents[1] / "docs/sidecar.schema.json"


@functools.cache
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(data: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
            for e in validator().iter_errors(data)]


def sidecars(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.json")
                  if any(p.name.endswith(f"{suffix}.json") for suffix in FORMATS))


def main(folders: list[str]) -> int:
    found = [p for folder in folders for p in sidecars(Path(folder))]
    bad = {p: problems(json.loads(p.read_text())) for p in found}
    bad = {p: errors for p, errors in bad.items() if errors}
    for path, errors in bad.items():
        print(f"{path}: {errors[0]}", file=sys.stderr)
    print(f"{len(found) - len(bad)} of {len(found)} sidecars valid against {SCHEMA.name}")
    return 1 if bad or not found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
