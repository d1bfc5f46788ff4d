"""What the export tests share: the CLI, sidecars, and the default model exported in several
modes into one folder."""

import json

from click.testing import CliRunner

from eelbert_export.cli import main

STEM = "uno-eelbert-sentiment"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sidecar(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def artifact(mode: str, suffix: str) -> str:
    return STEM + ("" if mode == "none" else f".{mode}") + suffix


def export_modes(command: str, modes, out):
    """Each mode exported and verified on the built-in sample (no prepared data)."""
    for mode in modes:
        result = run(command, "-o", out, "--quantize", mode, "--data", out / "no-data")
        assert result.exit_code == 0, result.output
    return out
