import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from eelbert_export.cli import main


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, status: int, message: str):
    assert result.exit_code == status, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eelbert-export: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_inspect_named_configs():
    uno = json.loads(run("inspect", "uno-eelbert", "--json").stdout)
    tiny = json.loads(run("inspect", "bert-tiny", "--json").stdout)
    assert uno["params"] == 281_090 and uno["fp32_bytes"] <= 1_200_000
    assert uno["hash_spec"]["variant"] == "portable" and uno["hash_constants"]["dtype"] == "int32"
    assert round(tiny["params"] / 1e6, 1) == 4.4 and tiny["hash_spec"] is None
    text = run("inspect", "uno-eelbert").stdout
    assert "total (deployable)" in text and "281,090" in text


def test_inspect_checkpoint(checkpoint_path):
    result = run("inspect", checkpoint_path, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["params"] == 281_090


def test_hash_stats_meets_its_targets():
    result = run("hash-stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["tokens"] == 30522 and stats["tokens_truncated"] == 0
    assert stats["identical_embedding_pairs"] == 0
    assert stats["colliding_fraction"] <= 0.01 and stats["passed"]


def test_hash_stats_fails_a_spec_that_collides(tmp_path):
    spec = tmp_path / "short.json"
    spec.write_text(json.dumps({"max_chars": 4, "moduli": [97], "bases": [31], "buckets": 97}))
    result = run("hash-stats", "--spec", spec, "--json")
    stats = json.loads(result.stdout)
    assert stats["identical_embedding_pairs"] > 0 and stats["colliding_fraction"] > 0.01
    assert_one_line_error(result, 1, "misses its collision targets")


def test_hash_stats_paper_variant():
    stats = json.loads(run("hash-stats", "--spec", "int64", "--json").stdout)
    assert stats["hash_spec"]["variant"] == "int64" and stats["passed"]


def corrupt(tmp_path: Path, checkpoint_path: Path, case: str) -> Path:
    """Bad input files, each of a kind a user may hand the CLI."""
    path = tmp_path / f"{case}.pt"
    data = torch.load(checkpoint_path, weights_only=True)
    if case == "random-bytes":
        path.write_bytes(bytes(range(256)) * 8)
    elif case == "text-file":
        path = tmp_path / "notes.txt"
        path.write_text("this is not a model\n")
    elif case == "truncated":
        path.write_bytes(checkpoint_path.read_bytes()[:5000])
    elif case == "plain-state-dict":
        torch.save(data["state_dict"], path)
    elif case == "pickled-code":
        torch.save(data | {"provenance": Path("/etc")}, path)
    elif case == "newer-format":
        torch.save(data | {"format_version": 99}, path)
    elif case == "newer-hash-spec":
        torch.save(data | {"hash_spec": data["hash_spec"] | {"version": 3}}, path)
    elif case == "newer-text-spec":
        torch.save(data | {"text_spec": data["text_spec"] | {"version": 5}}, path)
    elif case == "wrong-shapes":
        torch.save(data | {"config": data["config"] | {"ffn": 256}}, path)
    elif case == "missing-field":
        torch.save({k: v for k, v in data.items() if k != "labels"}, path)
    elif case == "folder":
        path.mkdir()
    elif case == "missing":
        pass
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("folder", "is a folder"),
    ("random-bytes", "not a PyTorch checkpoint"),
    ("text-file", "not a PyTorch checkpoint"),
    ("truncated", "truncated or damaged checkpoint"),
    ("plain-state-dict", "not an eelbert-export checkpoint"),
    ("pickled-code", "safe loader refuses"),
    ("newer-format", "format version 99 is newer"),
    ("newer-hash-spec", "hash spec version 3 is newer"),
    ("newer-text-spec", "text spec version 5 is newer"),
    ("wrong-shapes", "weights do not match the config: encoder.layers.0.intermediate.weight"),
    ("missing-field", "damaged checkpoint"),
])
def test_bad_checkpoints_exit_2_with_one_line(tmp_path, checkpoint_path, case, message):
    path = corrupt(tmp_path, checkpoint_path, case)
    assert_one_line_error(run("inspect", path), 2, message)


def test_bad_arguments_exit_2(tmp_path):
    assert_one_line_error(run("inspect", "eelbert-huge"), 2, "neither a checkpoint file")
    binary = tmp_path / "vocab.bin"
    binary.write_bytes(b"\xff\xfe\x00abc")
    assert_one_line_error(run("hash-stats", "--vocab", binary), 2, "not UTF-8 text")
    assert_one_line_error(run("hash-stats", "--vocab", tmp_path / "none.txt"), 2, "cannot read")
    bad_spec = tmp_path / "spec.json"
    bad_spec.write_text("{not json")
    assert_one_line_error(run("hash-stats", "--spec", bad_spec), 2, "not valid JSON")


def test_installed_console_script_reports_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("eelbert-export")
    proc = subprocess.run([script, "inspect", tmp_path / "nothing.pt"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"eelbert-export: error: {tmp_path / 'nothing.pt'}: no such file"
