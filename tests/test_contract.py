"""The sidecar contract: its schema as committed, a real export's sidecar read back as the
typed ``Sidecar``, a tampered sidecar refused in one line, and an ONNX artifact classified
without importing torch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eelbert_export.contract import SIDECAR_VERSION, Sidecar, json_schema, read_sidecar

from .exports import STEM, export_modes, run, sidecar

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    out = export_modes("onnx", ("int8",), tmp_path_factory.mktemp("contract"))
    return out / f"{STEM}.int8.onnx"


def test_committed_schema_is_the_dataclasses_schema():
    assert (ROOT / "docs/sidecar.schema.json").read_text() == json_schema(), \
        "run `make schema`"


def test_exported_sidecar_round_trips(onnx_file):
    data = sidecar(onnx_file)
    typed = read_sidecar(onnx_file)
    assert typed.to_dict() == data
    assert Sidecar.from_dict(data) == typed
    assert typed.sidecar_version == SIDECAR_VERSION and typed.labels == ["rotten", "fresh"]


def tampered(data):
    yield "no text", {k: v for k, v in data.items() if k != "text"}, "no text spec"
    yield "labels", data | {"model": data["model"] | {"labels": ["a", "b", "c"]}}, \
        "3 labels for 2 logits"
    yield "newer", data | {"sidecar_version": SIDECAR_VERSION + 1}, "upgrade eelbert-export"
    yield "older", {k: v for k, v in data.items() if k != "sidecar_version"}, "export the model"
    yield "runtime", data | {"conversion": {}}, "sidecar conversion is incomplete"
    yield "inputs", data | {"inputs": data["inputs"][::-1]}, "not the export contract's"
    yield "no shape", data | {"outputs": [data["outputs"][0] | {"shape": []}]}, "has no shape"
    yield "max_chars", data | {"max_chars": "20"}, "sidecar max_chars: '20' is not an integer"
    yield "conversion", data | {"conversion": []}, "sidecar conversion must be a mapping"
    check = data["verification"]
    yield "passed", data | {"verification": check | {"passed": False}}, "did not pass"
    yield "figures", data | {"verification": check | {"cosine": 0.5}}, "did not pass"
    yield "size", data | {"size": {"bytes": "big", "gzip_bytes": 1}}, "sidecar size bytes"


CASES = ["no text", "labels", "newer", "older", "runtime", "inputs", "no shape", "max_chars",
         "conversion", "passed", "figures", "size"]


def test_sidecar_written_validates_against_the_schema(onnx_file):
    from .schema import problems

    assert problems(sidecar(onnx_file)) == []
    for case, data, _ in tampered(sidecar(onnx_file)):
        if case in ("max_chars", "conversion", "size", "no text", "older", "runtime"):
            assert problems(data), case  # the schema refuses what the reader refuses


@pytest.mark.parametrize("case", CASES)
def test_tampered_sidecar_is_refused_in_one_line(onnx_file, tmp_path, case):
    copy = tmp_path / onnx_file.name
    shutil.copy(onnx_file, copy)
    _, data, message = next(t for t in tampered(sidecar(onnx_file)) if t[0] == case)
    copy.with_name(copy.name + ".json").write_text(json.dumps(data))
    result = run("predict", copy, "fine")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_and_onnx_predict_do_not_import_torch(onnx_file):
    """What an app engineer pays to classify a sentence with an ONNX file: no torch,
    coremltools or litert in the process."""
    probe = ("import sys; from eelbert_export.cli import main\n"
             "try: main(sys.argv[1:])\n"
             "except SystemExit as e: assert not e.code, e.code\n"
             "heavy = {'torch', 'coremltools', 'litert_torch', 'ai_edge_litert', 'executorch'} & "
             "set(sys.modules)\n"
             "assert not heavy, heavy\n")
    for args in (["--help"], ["predict", str(onnx_file), "a fine film"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
