"""The app side: an export folder alone (artifact, sidecar, tokenizer.json, front-end.json,
vectors) is enough to reproduce ``predict`` exactly, in Python from the shipped files and in
the reference JavaScript client (clients/js: onnxruntime-node, LiteRT.js), and a broken folder
gets one clear error."""

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from eelbert_export.front_end import TOKENIZER_FILE, VECTOR_TEXTS, read_vectors, vectors_path
from eelbert_export.text import TextEncoder, TextSpec

from .exports import STEM, export_modes, run, sidecar
from .test_hashing import random_tokens

CLIENT = Path(__file__).resolve().parents[1] / "clients" / "js"


def random_texts(n: int, seed: int) -> list[str]:
    """Texts of random Unicode words, with control, format and odd whitespace between them."""
    rng = random.Random(seed)
    glue = [" ", "  ", "\t", "\n", "\u00a0", "\u200b", "\u3000", "\x00", "\ufeff", "-", "[SEP]"]
    tokens = random_tokens(4 * n, seed)
    return ["".join(t + rng.choice(glue) for t in rng.sample(tokens, rng.randint(0, 12)))
            for _ in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = export_modes("onnx", ("none", "int8"), tmp_path_factory.mktemp("app"))
    return export_modes("tflite", ("none", "int8"), out)


def node(*args, stdin=None):
    if not (CLIENT / "node_modules").is_dir():
        pytest.fail("clients/js/node_modules is missing: run `make js` (make test does)")
    return subprocess.run(["node", *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=CLIENT, timeout=600)


def test_folder_ships_front_end_and_vectors(folder):
    onnx = folder / f"{STEM}.onnx"
    info = sidecar(onnx)
    assert info["front_end"]["tokenizer"] == TOKENIZER_FILE
    assert (folder / "front-end.json").is_file() and (folder / TOKENIZER_FILE).is_file()
    vectors = read_vectors(vectors_path(onnx))
    assert len(vectors) == len(VECTOR_TEXTS) >= 50
    assert run("predict", onnx, "--vectors").exit_code == 0
    tflite = sidecar(folder / f"{STEM}.tflite")
    assert [i["shape"] for i in tflite["inputs"]] == [[1, 128, 20], [1, 128]]


def test_user_text_never_becomes_a_special_token(folder):
    for vector in read_vectors(vectors_path(folder / f"{STEM}.onnx")):
        assert vector.tokens.count("[CLS]") == 1 and vector.tokens.count("[SEP]") == 1
        assert not {"[PAD]", "[MASK]"} & set(vector.tokens)
        assert all(m == 1 for m in vector.inputs["attention_mask"])


def test_shipped_tokenizer_is_the_front_end(folder):
    """One source of truth: the tokenizer.json an app loads gives the project's own tokens on
    random and adversarial Unicode, single texts and pairs."""
    shipped = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    encoder = TextEncoder(TextSpec(), 20)
    texts = random_texts(400, seed=3) + list(VECTOR_TEXTS)
    ours = encoder.encode(texts).tokens
    assert [e.tokens for e in shipped.encode_batch(texts)] == [t for t in ours]
    pairs = random_texts(len(texts), seed=4)
    ours = TextEncoder(TextSpec(), 20).encode(texts, pairs).tokens
    assert [e.tokens for e in shipped.encode_batch(list(zip(texts, pairs)))] == ours


def test_predict_reproduces_every_vector(folder):
    for name in (f"{STEM}.onnx", f"{STEM}.int8.onnx", f"{STEM}.tflite"):
        result = run("predict", folder / name, "--vectors")
        assert result.exit_code == 0, result.output
        assert f"{len(VECTOR_TEXTS)} test vectors reproduced" in result.output


def test_javascript_client_reproduces_every_vector(folder):
    done = node("bin/eelbert-check.js", folder)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and all(f"{len(VECTOR_TEXTS)} vectors reproduced" in x for x in lines)


def test_javascript_front_end_matches_on_random_unicode(folder):
    texts = random_texts(1500, seed=5)
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    done = node("bin/eelbert-tokens.js", folder / f"{STEM}.onnx", stdin=stdin)
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    want = TextEncoder(TextSpec(), 20).encode(texts).tokens
    mismatched = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert len(got) == len(texts) and not mismatched, mismatched[:2]


def broken(folder: Path, tmp_path: Path, case: str) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    artifact = copy / f"{STEM}.onnx"
    if case == "no tokenizer":
        (copy / TOKENIZER_FILE).unlink()
    elif case == "newer sidecar":
        info = sidecar(artifact) | {"sidecar_version": 99}
        artifact.with_name(artifact.name + ".json").write_text(json.dumps(info))
    elif case == "other tokenizer":
        (copy / TOKENIZER_FILE).write_text((copy / TOKENIZER_FILE).read_text()
                                           .replace('"[UNK]"', '"[unk]"', 1))
    elif case == "another artifact's sidecar":  # the int8 file's, renamed to match
        shutil.copy(copy / f"{STEM}.int8.onnx.json", artifact.with_name(artifact.name + ".json"))
    elif case == "wrong vectors":
        path = vectors_path(artifact)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows[3]["outputs"][0] += 0.5
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return artifact


# A broken folder: (JavaScript client's exit status, message), (predict's).
BROKEN = {
    "no tokenizer": ((2, "tokenizer.json is missing"), (2, "tokenizer.json is missing")),
    "newer sidecar": ((2, "upgrade"), (2, "upgrade")),
    "other tokenizer": ((2, "not the tokenizer"), (2, "not the tokenizer")),
    "wrong vectors": ((1, "vector 4: outputs differ"), (3, "test vectors failed")),
    "another artifact's sidecar": ((2, "is not the sidecar of"), (2, "is not the sidecar of")),
}


@pytest.mark.parametrize("case", BROKEN)
def test_javascript_client_bad_folders(folder, tmp_path, case):
    status, message = BROKEN[case][0]
    done = node("bin/eelbert-check.js", broken(folder, tmp_path, case))
    assert done.returncode == status, done.stdout + done.stderr
    out = (done.stdout + done.stderr).strip()
    assert message in out and len(out.splitlines()) == 1 and "    at " not in out


@pytest.mark.parametrize("case", BROKEN)
def test_predict_bad_folders(folder, tmp_path, case):
    status, message = BROKEN[case][1]
    result = run("predict", broken(folder, tmp_path, case), "--vectors")
    assert result.exit_code == status, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["nan outputs", "empty"])
def test_predict_vectors_never_passes_nan_or_nothing(folder, tmp_path, case):
    """NaN never compares equal, and a vectors file without vectors checks nothing: both fail."""
    artifact = broken(folder, tmp_path, "none")
    path = vectors_path(artifact)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("" if case == "empty" else "".join(
        json.dumps(r | {"outputs": [float("nan")] * len(r["outputs"])}) + "\n" for r in rows))
    result = run("predict", artifact, "--vectors")
    assert result.exit_code == 3, result.output
    assert "test vectors failed" in result.stderr
