"""Seconds-long smoke versions of pretraining and fine-tuning on slices of the real data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from eelbert_export import checkpoint
from eelbert_export.cli import main
from eelbert_export.hashing import HashSpec
from eelbert_export.model import default_hash_spec, named_configs
from eelbert_export.text import TextEncoder, TextSpec, vocabulary
from eelbert_export.training import objectives
from eelbert_export.training.loop import Recipe
from eelbert_export.training.pretrain import pretrain

FIXTURES = Path(__file__).parent / "fixtures"
RECIPE = dict(batch=8, lr=2e-3, seq=32, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    lines = (FIXTURES / "corpus.txt").read_text().splitlines()
    (folder / "train.txt").write_text("\n".join(lines[:270]) + "\n")
    (folder / "valid.txt").write_text("\n".join(lines[270:]) + "\n")
    return folder


def uno():
    config = named_configs()["uno-eelbert"]
    return config, default_hash_spec(config)


def fixed_batch_loss(model, corpus: Path) -> float:
    """MLM loss on the same masked batch (step 0) for any model."""
    encoder = TextEncoder(TextSpec(max_length=32), 20)
    rows = objectives.pack(objectives.read_lines(corpus / "valid.txt"), encoder, 32)
    recipe = Recipe(steps=1, **RECIPE)
    ids, targets = objectives.mlm_batch(rows, 0, recipe, 30522, vocabulary().index("[MASK]"))
    objectives.cache_vocabulary(model)
    model.eval()
    with torch.no_grad():
        return objectives.mlm_loss(model, ids, targets).item()


def test_pretraining_lowers_the_loss_and_reloads(corpus, tmp_path):
    config, spec = uno()
    out = tmp_path / "mlm.pt"
    report = pretrain(config, spec, corpus, out, Recipe(steps=40, **RECIPE))
    torch.manual_seed(0)
    before = fixed_batch_loss(checkpoint.new_model("mlm", config, spec), corpus)
    loaded = checkpoint.load(out)
    assert loaded.kind == "mlm" and loaded.provenance["pretraining"]["steps"] == 40
    after = fixed_batch_loss(loaded.model, corpus)
    assert after < before - 1.0, (before, after)
    assert report["tokens_per_second"] > 0 and not out.with_name("mlm.pt.state").exists()


def test_resume_continues_exactly(corpus, tmp_path, monkeypatch):
    config, spec = uno()
    recipe = Recipe(steps=8, checkpoint_every=4, **RECIPE)
    straight = tmp_path / "straight.pt"
    pretrain(config, spec, corpus, straight, recipe)

    resumed = tmp_path / "resumed.pt"
    real_loss, calls = objectives.mlm_loss, []

    def crash_at_step_6(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(objectives, "mlm_loss", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, spec, corpus, resumed, recipe)
    monkeypatch.setattr(objectives, "mlm_loss", real_loss)
    state = torch.load(resumed.with_name("resumed.pt.state"), weights_only=True)
    assert state["step"] == 4 and not resumed.exists()
    pretrain(config, spec, corpus, resumed, recipe, resume=True)
    a, b = checkpoint.load(straight).model, checkpoint.load(resumed).model
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_finetune_from_pretrained_csv_and_evaluate(corpus, tmp_path):
    config, spec = uno()
    mlm = tmp_path / "mlm.pt"
    pretrain(config, spec, corpus, mlm, Recipe(steps=5, **RECIPE))
    out = tmp_path / "clf.pt"
    task = f"csv:{FIXTURES / 'sentiment.csv'}"
    result = CliRunner().invoke(main, ["train", "finetune", "--init", str(mlm), "--task", task,
                                       "--out", str(out), "--steps", "30", "--batch", "16"])
    assert result.exit_code == 0, result.output
    ckpt = checkpoint.load(out)
    assert ckpt.labels == ["fresh", "rotten"] and ckpt.kind == "classifier"
    report = ckpt.provenance["finetuning"]
    assert ckpt.provenance["pretraining"]["steps"] == 5  # the encoder came from the MLM run
    assert report["steps"] == 30 and report["dev"]["examples"] > 0
    # The saved model reproduces the dev figure it was selected on.
    dev = CliRunner().invoke(main, ["evaluate", str(out), "--task", task, "--split", "dev",
                                    "--json"])
    assert dev.exit_code == 0, dev.output
    assert json.loads(dev.stdout)["accuracy"] == report["dev"]["accuracy"]


def test_finetune_vocabulary_free_and_from_scratch(tmp_path):
    out = tmp_path / "words.pt"
    task = f"csv:{FIXTURES / 'sentiment.csv'}"
    result = CliRunner().invoke(main, ["train", "finetune", "--init", "uno-eelbert", "--task",
                                       task, "--out", str(out), "--steps", "10", "--batch", "16",
                                       "--text-mode", "words"])
    assert result.exit_code == 0, result.output
    ckpt = checkpoint.load(out)
    assert ckpt.text_spec.mode == "words"
    assert ckpt.text_encoder().encode(["unbelievably good"]).tokens[0][1] == "unbelievably"


def test_finetune_with_a_hash_spec_file(tmp_path):
    """An ablation's spec file overrides the portable spec's fields, sized to the config."""
    (tmp_path / "orders2.json").write_text('{"orders": 2, "max_chars": 12}')
    task = f"csv:{FIXTURES / 'sentiment.csv'}"
    args = ["train", "finetune", "--init", "uno-eelbert", "--task", task, "--steps", "5",
            "--batch", "16"]
    result = CliRunner().invoke(main, args + ["--hash", str(tmp_path / "orders2.json"),
                                              "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    spec = checkpoint.load(tmp_path / "m.pt").hash_spec
    assert (spec.orders, spec.max_chars, spec.dim) == (2, 12, 128)
    (tmp_path / "bad.json").write_text('{"orders": 0}')
    for bad in ("bad.json", "missing.json"):
        result = CliRunner().invoke(main, args + ["--hash", str(tmp_path / bad),
                                                  "--out", str(tmp_path / "x.pt")])
        assert result.exit_code == 2 and not (tmp_path / "x.pt").exists()


def test_paper_faithful_hash_trains(corpus, tmp_path):
    config, _ = uno()
    spec = HashSpec(variant="int64", moduli=(2**31 - 1,), bases=(1_000_003,), buckets=2**31 - 1)
    pretrain(config, spec, corpus, tmp_path / "int64.pt", Recipe(steps=2, **RECIPE))
    assert checkpoint.load(tmp_path / "int64.pt").hash_spec.variant == "int64"


@pytest.mark.parametrize("content, message", [
    (b"sentence,label\nhi,fresh\n", "missing column text"),
    (b"text,label\nhi,fresh\n,rotten\n", "line 3 has an empty text or label"),
    (b"text,label\n\xff\xfe bad,fresh\n", "not UTF-8 text"),
    (b"text,label\nhi,fresh\nho,fresh\n", "at least two labels"),
    (b"", "missing columns text, label"),
])
def test_bad_csv_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["train", "finetune", "--init", "uno-eelbert", "--task",
                                       f"csv:{path}", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_evaluate_rejects_foreign_labels_and_missing_data(tmp_path, checkpoint_path):
    other = tmp_path / "other.csv"
    other.write_text("text,label\ngreat,good\nawful,bad\n")
    result = CliRunner().invoke(main, ["evaluate", str(checkpoint_path), "--task", f"csv:{other}"])
    assert result.exit_code == 2 and "are not the task's" in result.stderr
    result = CliRunner().invoke(main, ["evaluate", str(checkpoint_path), "--task", "sentiment",
                                       "--data", str(tmp_path / "nodata")])
    assert result.exit_code == 2 and "data prepare" in result.stderr


def test_unwritable_output_fails_before_training(tmp_path, corpus):
    result = CliRunner().invoke(main, ["train", "pretrain", "--config", "uno-eelbert",
                                       "--corpus", str(corpus), "--out",
                                       str(tmp_path / "no" / "x.pt")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_torchrun_data_parallel(corpus, tmp_path):
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29517", "-m", "eelbert_export.cli", "train", "pretrain", "--config",
         "uno-eelbert", "--corpus", str(corpus), "--out", str(out), "--steps", "3", "--batch",
         "8", "--seq", "32"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert checkpoint.load(out).provenance["pretraining"]["processes"] == 2


def test_ngram_table_model_pretrains(corpus, tmp_path):
    """The MLM head scores against the vocabulary's word vectors, here computed from the
    n-gram table (trainable) instead of a fixed cache."""
    config = named_configs()["uno-eelbert-ngrams"]
    spec = default_hash_spec(config)
    out = tmp_path / "mlm.pt"
    pretrain(config, spec, corpus, out, Recipe(steps=40, **RECIPE))
    torch.manual_seed(0)
    before = fixed_batch_loss(checkpoint.new_model("mlm", config, spec), corpus)
    after = fixed_batch_loss(checkpoint.load(out).model, corpus)
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("config", ["uno-eelbert-ngrams", "uno-eelbert-wide"])
def test_variant_finetunes_selects_on_dev_and_reloads(tmp_path, config):
    """Dev is checked every --eval-every steps and at the end; the kept weights are those with
    the best dev balanced accuracy, and the saved model reproduces that figure."""
    out = tmp_path / "clf.pt"
    task = f"csv:{FIXTURES / 'sentiment.csv'}"
    result = CliRunner().invoke(main, ["train", "finetune", "--init", config, "--task", task,
                                       "--out", str(out), "--steps", "25", "--batch", "16",
                                       "--eval-every", "10", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    ckpt = checkpoint.load(out)
    assert ckpt.config.name == config and ckpt.hash_spec == default_hash_spec(ckpt.config)
    report = ckpt.provenance["finetuning"]
    history = report["history"]
    assert [h["step"] for h in history] == [10, 20, 25]
    best = max(history, key=lambda h: h["balanced_accuracy"])
    assert report["best_step"] == best["step"] and report["dev"]["accuracy"] == best["accuracy"]
    dev = CliRunner().invoke(main, ["evaluate", str(out), "--task", task, "--split", "dev",
                                    "--json"])
    assert dev.exit_code == 0, dev.output
    assert json.loads(dev.stdout)["accuracy"] == report["dev"]["accuracy"]


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**70)], "--seed"),
])
def test_recipe_options_out_of_range(tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "finetune", "--init", "uno-eelbert", "--task",
                                       f"csv:{FIXTURES / 'sentiment.csv'}", "--out",
                                       str(tmp_path / "m.pt"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("world, message", [("two", "WORLD_SIZE must be a positive integer"),
                                            ("2", "start data-parallel training with torchrun")])
def test_world_size_without_torchrun(tmp_path, corpus, monkeypatch, world, message):
    monkeypatch.setenv("WORLD_SIZE", world)
    for name in ("RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["train", "pretrain", "--config", "uno-eelbert",
                                       "--corpus", str(corpus), "--out", str(tmp_path / "m.pt"),
                                       "--steps", "2", "--batch", "8", "--seq", "32"])
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.parametrize("state", ["truncated", "other-config"])
def test_resume_refuses_a_foreign_or_damaged_state(tmp_path, corpus, state):
    args = ["train", "pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "m.pt"),
            "--steps", "6", "--batch", "8", "--seq", "32", "--checkpoint-every", "3"]
    saved = tmp_path / "m.pt.state"
    if state == "truncated":
        saved.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    else:
        torch.save({"model": {}, "optimizer": {}, "step": 3}, saved)
    result = CliRunner().invoke(main, [*args, "--config", "uno-eelbert", "--resume"])
    assert result.exit_code == 2, result.output
    assert "remove it to start over" in result.stderr and "Traceback" not in result.output


def test_a_diverged_run_stops_with_one_line(tmp_path, corpus, monkeypatch):
    """A non-finite loss (an lr far too high) ends training at once instead of saving NaN
    weights."""
    real = objectives.mlm_loss
    monkeypatch.setattr(objectives, "mlm_loss", lambda *a: real(*a) * float("nan"))
    result = CliRunner().invoke(main, ["train", "pretrain", "--config", "uno-eelbert",
                                       "--corpus", str(corpus), "--out", str(tmp_path / "m.pt"),
                                       "--steps", "3", "--batch", "8", "--seq", "32"])
    assert result.exit_code == 1 and "training diverged: the loss is nan at step 1" in \
        result.stderr, result.output
    assert not (tmp_path / "m.pt").exists()
