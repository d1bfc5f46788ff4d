"""What the export tests share: the CLI, sidecars, and the default model exported in several
modes into one folder."""

import json

import numpy as np
from click.testing import CliRunner

from eelbert_export.cli import main
from eelbert_export.embeddings import stage_reference
from eelbert_export.exporters.deployable import SAMPLE_TEXTS
from eelbert_export.hashing import HashSpec, token_codes
from eelbert_export.predict import load_predictor
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


def recomputed(path, model=None, texts=SAMPLE_TEXTS):
    """The artifact's logits on ``texts`` in its own runtime (as ``predict`` runs it) against
    its checkpoint's in PyTorch, computed here: (max |diff|, mean cosine, label agreement)."""
    items = [(text, None) for text in texts]
    got = load_predictor(path, 1).logits(items)
    want = load_predictor(model or default_model(), 1).logits(items)
    cosine = np.sum(got * want, 1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12)
    return float(np.abs(got - want).max()), float(cosine.mean()), \
        float(np.mean(got.argmax(1) == want.argmax(1)))


def assert_hash_stage_exact(fmt, path, seed: int) -> None:
    """The artifact's own hash stage on 100 adversarial tokens, bit for bit against the
    Python-integer reference of the spec its sidecar states."""
    spec = HashSpec.from_dict(sidecar(path)["hash_spec"])
    tokens = random_tokens(100, seed=seed)
    codes = token_codes(tokens, spec.max_chars)[None]
    got = fmt.hash_runner(path, spec)(codes)[0]
    np.testing.assert_array_equal(got.view(np.uint32),
                                  stage_reference(tokens, spec).view(np.uint32))
