"""Teachers and distillation on a tiny random BERT built here (hidden 32, saved with
save_pretrained): `train teacher` runs, a distilled student moves toward its teacher, the
transfer set and the label cache are deterministic and resumable, and every bad teacher, cache
or device is one line and exit 2 before any long work."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from eelbert_export import checkpoint
from eelbert_export.cli import main
from eelbert_export.tasks import load_task
from eelbert_export.training import teacher as teachers
from eelbert_export.training import transfer
from eelbert_export.training.objectives import cache_vocabulary, id_batch, student_logits
from eelbert_export.zoo import vocab_path

from .test_cli import assert_one_line_error

FIXTURES = Path(__file__).parent / "fixtures"
TASK = f"csv:{FIXTURES / 'sentiment.csv'}"
SMALL = ["--copies", "2", "--windows", "300", "--transfer-length", "32"]


def tiny_bert(folder: Path, labels: int | None = 2, init: float = 0.02) -> Path:
    """A random BERT (2 layers, hidden 32) with our vocabulary's tokenizer; ``labels`` None is a
    bare encoder; a large ``init`` gives logits that vary from text to text."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128, num_labels=labels or 2,
                                     initializer_range=init)
    model = transformers.BertModel(config) if labels is None else \
        transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder)
    transformers.BertTokenizer(vocab=str(vocab_path())).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    shutil.copy(FIXTURES / "corpus.txt", folder / "train.txt")
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny encoder fine-tuned on the fixture CSV by `train teacher`."""
    root = tmp_path_factory.mktemp("teacher")
    out = root / "tuned"
    result = CliRunner().invoke(main, [
        "train", "teacher", "--teacher", str(tiny_bert(root / "encoder", None)), "--task", TASK,
        "--out", str(out), "--steps", "60", "--batch", "16", "--eval-every", "20",
        "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    return out


def distill(args: list, tmp_path: Path, corpus: Path, teacher: Path, **extra):
    return CliRunner().invoke(main, [
        "train", "distill", "--teacher", str(teacher), "--init", "uno-eelbert-ngrams",
        "--task", TASK, "--corpus", str(corpus), "--cache", str(tmp_path / "cache"),
        *SMALL, *args], **extra)


def test_train_teacher_writes_a_hugging_face_folder_with_its_figures(teacher):
    report = json.loads((teacher / "eelbert-teacher.json").read_text())
    history = report["finetuning"]["history"]
    assert [h["step"] for h in history] == [20, 40, 60]
    assert report["dev"]["balanced_accuracy"] == max(h["balanced_accuracy"] for h in history)
    opened = teachers.open_teacher(teacher, load_task(TASK, Path("data")))
    assert opened.labels == ["fresh", "rotten"] and opened.same_vocabulary
    # The saved teacher reproduces the dev figure it was selected on.
    again = teachers.evaluate(opened, load_task(TASK, Path("data")), "dev")
    assert again["accuracy"] == report["dev"]["accuracy"]


def test_distilled_student_moves_toward_its_teacher(tmp_path, corpus):
    """The student's logits on the transfer set come far closer to the teacher's cached ones
    than those of the same model untrained (a random teacher whose logits vary by text)."""
    out, teacher = tmp_path / "student.pt", tiny_bert(tmp_path / "random", 2, init=0.5)
    result = distill(["--out", str(out), "--steps", "300", "--batch", "32", "--eval-every",
                      "100"], tmp_path, corpus, teacher)
    assert result.exit_code == 0, result.output
    task = load_task(TASK, Path("data"))
    rows = transfer.build(task, corpus, transfer.TransferSpec(copies=2, windows=300,
                                                              max_length=32))
    (cached,) = (tmp_path / "cache").glob("*.npy")
    target = torch.from_numpy(np.load(cached))
    assert float((target[:, 0] - target[:, 1]).std()) > 0.5  # something to teach

    def gap(model) -> float:
        cache_vocabulary(model)
        with torch.no_grad():
            logits = student_logits(model.eval(), id_batch(rows.ids))
        return float(((logits - target) ** 2).mean())
    student = checkpoint.load(out)
    torch.manual_seed(0)
    fresh = checkpoint.new_model("classifier", student.config, student.hash_spec, 2)
    assert gap(student.model) < 0.5 * gap(fresh), (gap(student.model), gap(fresh))
    record = student.provenance["distillation"]
    opened = teachers.open_teacher(teacher, task)
    assert record["teacher"]["weights_sha256"] == opened.sha256
    assert record["teacher"]["dev"]["examples"] == len(task.dev)
    assert record["transfer"]["rows"] == len(task.train) * 3 + 300 == len(target)
    assert not out.with_name("student.pt.state").exists()


def test_transfer_set_is_a_function_of_its_seed(corpus):
    task = load_task(TASK, Path("data"))
    spec = transfer.TransferSpec(copies=2, windows=50, max_length=32)
    a, b = transfer.build(task, corpus, spec), transfer.build(task, corpus, spec)
    assert a.key == b.key and np.array_equal(a.ids, b.ids)
    other = transfer.build(task, corpus, transfer.TransferSpec(copies=2, windows=50,
                                                                max_length=32, seed=1))
    assert other.key != a.key
    originals = len(task.train)
    assert (a.gold[:originals] >= 0).all() and (a.gold[originals:] == -1).all()
    mask = a.ids[originals:] == 103
    assert 0.03 < mask.sum() / (a.ids[originals:] > 998).sum() < 0.3


def test_resumed_labelling_does_not_relabel(tmp_path, corpus, teacher, monkeypatch):
    task = load_task(TASK, Path("data"))
    opened = teachers.open_teacher(teacher, task)
    rows = transfer.build(task, corpus, transfer.TransferSpec(copies=2, windows=0,
                                                              max_length=32))
    whole = teachers.label(opened, rows, tmp_path / "whole", batch=16)
    real, calls = teachers.teacher_logits, []

    def crash_after_25(*args):
        calls.append(1)
        if len(calls) > 25:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(teachers, "teacher_logits", crash_after_25)
    with pytest.raises(KeyboardInterrupt):
        teachers.label(opened, rows, tmp_path / "cache", batch=16)
    calls.clear()
    monkeypatch.setattr(teachers, "teacher_logits", lambda *a: calls.append(1) or real(*a))
    resumed = teachers.label(opened, rows, tmp_path / "cache", batch=16)
    batches = -(-len(rows.ids) // 16)
    assert len(calls) == batches - 20  # progress is kept every 20 batches
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-5)
    calls.clear()
    assert np.array_equal(teachers.label(opened, rows, tmp_path / "cache", batch=16), resumed)
    assert not calls and not list((tmp_path / "cache").glob("*.partial*"))


def bad_teacher(case: str, root: Path, teacher: Path) -> Path:
    folder = root / case
    if case == "missing":
        return folder
    shutil.copytree(teacher, folder)
    config = json.loads((folder / "config.json").read_text())
    if case == "gpt2":
        (folder / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    elif case == "encoder":
        tiny_bert(folder, None)
    elif case == "three-labels":
        tiny_bert(folder, 3)
    elif case == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            (folder / name).unlink(missing_ok=True)
    elif case == "truncated":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
    return folder


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("gpt2", "not a BERT-family encoder"),
    ("encoder", "without a classification head"),
    ("three-labels", "3 labels, the task has 2"),
    ("no-tokenizer", "no tokenizer"),
    ("truncated", "cannot load its weights"),
])
def test_bad_teacher_is_refused_before_work(tmp_path, corpus, teacher, case, message):
    out = tmp_path / "m.pt"
    result = distill(["--out", str(out), "--steps", "2",
                      "--teacher", str(bad_teacher(case, tmp_path, teacher))],
                     tmp_path, corpus, teacher)
    assert_one_line_error(result, 2, message)
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_label_cache_from_another_teacher_is_refused(tmp_path, corpus, teacher):
    first = distill(["--out", str(tmp_path / "a.pt"), "--steps", "2"], tmp_path, corpus,
                    teacher)
    assert first.exit_code == 0, first.output
    (record,) = (tmp_path / "cache").glob("*.json")
    meta = json.loads(record.read_text())
    record.write_text(json.dumps(meta | {"teacher": "another", "weights_sha256": "0" * 64}))
    result = distill(["--out", str(tmp_path / "b.pt"), "--steps", "2"], tmp_path, corpus,
                     teacher)
    assert_one_line_error(result, 2, "made with another teacher or transfer set")
    assert not (tmp_path / "b.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["distill", "teacher", "finetune", "pretrain"])
def test_cuda_without_a_gpu_is_refused(tmp_path, corpus, teacher, command):
    args = {"distill": ["--teacher", str(teacher), "--init", "uno-eelbert-ngrams", "--task",
                        TASK],
            "teacher": ["--teacher", str(teacher), "--task", TASK],
            "finetune": ["--init", "uno-eelbert-ngrams", "--task", TASK],
            "pretrain": ["--config", "uno-eelbert", "--corpus", str(corpus)]}[command]
    result = CliRunner().invoke(main, ["train", command, *args, "--out",
                                       str(tmp_path / "out"), "--device", "cuda"])
    assert_one_line_error(result, 2, "no CUDA GPU")
    assert not (tmp_path / "out").exists()
