"""`eelbert-export data prepare` on a fresh folder (downloads from the registries), and the
shipped models measured against their cards on the prepared data."""

import json
import re

import pytest
from click.testing import CliRunner

from eelbert_export.cli import main
from eelbert_export.data import committed_manifest
from eelbert_export.tasks import read_split
from eelbert_export.zoo import models_dir


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    result = CliRunner().invoke(main, ["data", "prepare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_prepare_matches_the_committed_manifest(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest == committed_manifest()
    corpus = manifest["corpus"]["files"]["corpus/train.txt"]
    assert corpus["bytes"] >= 15_000_000
    assert set(manifest["corpus"]["by_source"]) >= {"wikipedia", "austen", "wordnet"}


def test_sentiment_splits_never_share_a_movie(prepared):
    movies = {s: {r["movie"] for r in read_split(prepared, "sentiment", s)}
              for s in ("train", "dev", "test")}
    assert not movies["train"] & movies["dev"] and not movies["train"] & movies["test"]
    assert not movies["dev"] & movies["test"]
    texts = [r["text"] for s in ("train", "dev", "test")
             for r in read_split(prepared, "sentiment", s)]
    assert len(texts) == len(set(texts)) == 12_752


def test_boolq_keeps_its_own_validation_as_test(prepared):
    test = read_split(prepared, "boolq", "test")
    assert len(test) == 3270 and {r["label"] for r in test} == {"true", "false"}
    assert all(r["text"] and r["text_b"] for r in test)


def card_figure(name: str) -> float:
    text = (models_dir() / f"{name}.md").read_text()
    return float(re.search(r"test accuracy: ([0-9.]+)", text).group(1))


@pytest.mark.parametrize("name", ["uno-eelbert-ngrams-sentiment", "uno-eelbert-sentiment"])
def test_shipped_models_reproduce_their_cards(prepared, name):
    path = models_dir() / f"{name}.pt"
    result = CliRunner().invoke(main, ["evaluate", str(path), "--task", "sentiment", "--split",
                                       "test", "--data", str(prepared), "--json"])
    assert result.exit_code == 0, result.output
    assert round(json.loads(result.stdout)["accuracy"], 4) == card_figure(name)


def test_default_model_is_uno_eelbert_within_budget(prepared):
    path = models_dir() / "uno-eelbert-ngrams-sentiment.pt"
    assert path.stat().st_size <= 1_200_000
    result = CliRunner().invoke(main, ["evaluate", "--task", "sentiment", "--data",
                                       str(prepared)])  # no MODEL: the default one
    assert result.exit_code == 0 and "accuracy" in result.stdout


def test_prepare_into_an_unwritable_place_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["data", "prepare", "--out", str(blocker / "data")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
