"""What the export tests share: the CLI, sidecars, and the default model exported in several
modes into one folder."""

import json

import numpy as np
from click.testing import CliRunner

from eelbert_export.cli import main
from eelbert_export.hashing import HashSpec, stage_reference, token_codes
from eelbert_export.zoo import default_model

from .test_hashing import random_tokens

STEM = default_model().stem


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sidecar(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def artifact(mode: str, suffix: str) -> str:
    return STEM + ("" if mode == "none" else f".{mode}") + suffix


def export_modes(command: str, modes, out):
    """Each mode exported and verified on the built-in sample (no prepared data), quietly:
    the converters' and evaluators' chatter stays off the user's terminal."""
    for mode in modes:
        result = run(command, "-o", out, "--quantize", mode, "--data", out / "no-data")
        assert result.exit_code == 0, result.output
        assert result.stderr == "", result.stderr
    return out


def assert_hash_stage_exact(fmt, path, seed: int) -> None:
    """The artifact's own hash stage on 200 adversarial tokens, bit for bit against the
    Python-integer reference of the spec its sidecar states."""
    spec = HashSpec.from_dict(sidecar(path)["hash_spec"])
    tokens = random_tokens(200, seed=seed)
    codes = token_codes(tokens, spec.max_chars)[None]
    got = fmt.hash_runner(path)(codes)[0]
    np.testing.assert_array_equal(got.view(np.uint32),
                                  stage_reference(tokens, spec).view(np.uint32))
