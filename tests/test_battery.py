"""The careless user and the unlucky machine: corrupt and foreign artifacts, tampered sidecars,
out-of-range options, hostile CSVs, overwrites, a full disk and signals. Every case ends in one
line on stderr with the stated exit status, no traceback, and the folder as it was."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eelbert_export.zoo import default_model

from .exports import run
from .test_cli import assert_one_line_error

MODEL = default_model()
SCRIPT = Path(sys.executable).with_name("eelbert-export")
SHARED = ("tokenizer.json", "front-end.json")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The default model exported to ONNX and TFLite, into a folder the export creates."""
    out = tmp_path_factory.mktemp("battery") / "new" / "folder"
    for fmt in ("onnx", "tflite"):
        result = run(fmt, MODEL, "-o", out, "--no-verify")
        assert result.exit_code == 0, result.output
    return out


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "folder" for p in sorted(folder.rglob("*"))}


def beside(good: Path, folder: Path, name: str, sidecar_of: str) -> Path:
    """A bad artifact ``name`` with a real sidecar and the front-end files beside it."""
    folder.mkdir(exist_ok=True)
    for shared in SHARED:
        shutil.copy(good / shared, folder / shared)
    shutil.copy(good / f"{MODEL.stem}{sidecar_of}.json", folder / f"{name}.json")
    return folder / name


def bad_artifact(good: Path, folder: Path, case: str) -> Path:
    onnx, tflite = good / f"{MODEL.stem}.onnx", good / f"{MODEL.stem}.tflite"
    if case == "truncated.onnx":
        path = beside(good, folder, case, ".onnx")
        path.write_bytes(onnx.read_bytes()[:50_000])
    elif case == "random.tflite":
        path = beside(good, folder, case, ".tflite")
        path.write_bytes(bytes(range(256)) * 100)
    elif case == "broken.mlpackage":
        path = beside(good, folder, case, ".onnx")
        path.mkdir()
        (path / "Manifest.json").write_text("not json")
    elif case == "tflite-renamed.onnx":
        path = beside(good, folder, case, ".onnx")
        shutil.copy(tflite, path)
    return path


ARTIFACT_CASES = ["truncated.onnx", "random.tflite", "broken.mlpackage", "tflite-renamed.onnx"]


@pytest.mark.parametrize("case", ARTIFACT_CASES)
@pytest.mark.parametrize("command", ["predict", "bench", "predict --vectors"])
def test_corrupt_or_foreign_artifacts(good, tmp_path, case, command):
    path = bad_artifact(good, tmp_path / "bad", case)
    before = snapshot(tmp_path)
    words = command.split()
    args = [*words, path] + (["a wonderful film"] if words == ["predict"] else []) + \
        (["--runs", "1", "--seq", "16"] if words == ["bench"] else [])
    result = run(*args)
    message = "coreml runs only on macOS" if command == "bench" and ".mlpackage" in case \
        else str(path)
    assert_one_line_error(result, 2, message)
    assert snapshot(tmp_path) == before


def tamper(good: Path, folder: Path, case: str) -> Path:
    """The real ONNX artifact beside a sidecar changed as a hand edit or a bad copy would."""
    path = beside(good, folder, "model.onnx", ".onnx")
    shutil.copy(good / f"{MODEL.stem}.onnx", path)
    sidecar_file = folder / "model.onnx.json"
    data = json.loads(sidecar_file.read_text())
    if case == "no-text":
        del data["text"]
    elif case == "one-label":  # consistent in itself, but not with the model's real outputs
        data["model"]["labels"] = ["only"]
        data["outputs"][0]["shape"][-1] = 1
    elif case == "label-count":
        data["model"]["labels"] = ["only"]
    elif case == "newer":
        data["sidecar_version"] = 99
    elif case == "older":
        data["sidecar_version"] = 1
    elif case == "missing":
        sidecar_file.unlink()
        return path
    elif case == "not-json":
        sidecar_file.write_text("{")
        return path
    elif case == "tokenizer-changed":
        (folder / "tokenizer.json").write_text("{}")
    elif case == "output-shape":
        data["outputs"][0]["shape"] = []
    elif case == "max-chars-string":
        data["max_chars"] = "20"
    elif case == "conversion-list":
        data["conversion"] = []
    elif case == "dev-zero":
        sidecar_file.unlink()
        sidecar_file.symlink_to("/dev/zero")
        return path
    elif case == "another-artifact":  # a real sidecar, of another file
        data = json.loads((good / f"{MODEL.stem}.tflite.json").read_text())
    elif case == "tokenizer-broken":  # broken JSON whose sha256 was updated in the sidecar
        text = (folder / "tokenizer.json").read_text()[:-10]
        (folder / "tokenizer.json").write_text(text)
        data["front_end"]["tokenizer_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    sidecar_file.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("case, message", [
    ("no-text", "no text spec"),
    ("one-label", "names 1 labels but the model gives outputs of shape [2]"),
    ("label-count", "1 labels for 2 logits"),
    ("newer", "sidecar version 99 is newer"),
    ("older", "export the model again"),
    ("missing", "model.onnx.json"),
    ("not-json", "model.onnx.json"),
    ("tokenizer-changed", "not the tokenizer"),
    ("output-shape", "the logits output has no shape"),
    ("max-chars-string", "sidecar max_chars: '20' is not an integer"),
    ("conversion-list", "sidecar conversion must be a mapping"),
    ("dev-zero", "not a file this tool wrote"),
    ("tokenizer-broken", "tokenizer.json: not a tokenizer.json"),
    ("another-artifact", f"is not the sidecar of model.onnx (it records another file's sha256, "
                         f"an export of {MODEL.stem}.tflite)"),
])
def test_tampered_sidecars(good, tmp_path, case, message):
    path = tamper(good, tmp_path, case)
    assert_one_line_error(run("predict", path, "a wonderful film"), 2, message)


def vectors_file(good: Path, folder: Path, case: str) -> Path:
    """The real ONNX artifact and sidecar beside a vectors file edited as a bad copy would."""
    path = beside(good, folder, "model.onnx", ".onnx")
    shutil.copy(good / f"{MODEL.stem}.onnx", path)
    lines = (good / f"{MODEL.stem}.onnx.vectors.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    if case == "text-number":
        row["text"] = 7
    elif case == "outputs-string":
        row["outputs"] = "0.5"
    elif case == "ragged":
        row["inputs"]["token_codes"][0] = [1, 2]
    elif case == "foreign-input":
        row["inputs"] = {"input_ids": row["inputs"]["attention_mask"]} | row["inputs"]
    data = json.loads((folder / "model.onnx.json").read_text())
    (folder / data["front_end"]["vectors"]).write_text(
        "\n".join([json.dumps(row), *lines[1:]]) + "\n")
    return path


@pytest.mark.parametrize("case, status, message", [
    ("text-number", 2, "line 1: vector text: 7 is not a string"),
    ("outputs-string", 2, "line 1: vector outputs: '0.5' is not a list"),
    ("ragged", 2, "line 1: inputs or outputs are not rectangular"),
    ("foreign-input", 3, "test vectors failed: tokens equal 56/56, inputs equal 55/56"),
])
def test_damaged_vectors_files(good, tmp_path, case, status, message):
    path = vectors_file(good, tmp_path, case)
    assert_one_line_error(run("predict", path, "--vectors"), status, message)


@pytest.mark.parametrize("args, message", [
    (["onnx", "--opset", "7"], "'--opset': 7 is not in the range 18<=x<=21"),
    (["onnx", "--opset", "99"], "'--opset': 99 is not in the range"),
    (["tflite", "--seq-len", "600"], "'--seq-len'"),
    (["tflite", "--seq-len", "2"], "'--seq-len'"),
    (["onnx", "--max-chars", "0"], "'--max-chars'"),
    (["onnx", "--quantize", "int3"], "'--quantize'"),
    (["train", "finetune", "--init", "uno-eelbert", "--task", "sentiment", "--out", "m.pt",
      "--steps", "0"], "'--steps': 0 is not in the range 1<=x<="),
    (["train", "finetune", "--init", "uno-eelbert", "--task", "sentiment", "--out", "m.pt",
      "--batch", "0"], "'--batch'"),
    (["train", "finetune", "--init", "uno-eelbert", "--task", "sentiment", "--out", "m.pt",
      "--lr", "-1"], "'--lr'"),
    (["train", "finetune", "--init", MODEL, "--task", "csv:{csv}", "--out", "{tmp}/m.pt",
      "--max-length", "200"], "--max-length 200 is past the model's"),
    (["bench", "{onnx}", "--seq", "1000"], "--seq 1000: "),
    (["bench", "{tflite}", "--seq", "129"], "takes at most 128 tokens"),
    (["bench", MODEL, "--seq", "100000"], "takes at most 128 tokens"),
    (["bench", "--threads", "0"], "every value must be in 1.."),
    (["bench", "--threads", "5000"], "every value must be in 1.."),
    (["bench", "--batch", "99999999999999999999"], "every value must be in 1..4096"),
    (["bench", "--runs", "1000000000"], "'--runs'"),
    (["evaluate", MODEL, "--task", "csv:{pairs}"], "the model takes single texts"),
    (["compare", "--runs", "{tmp}/missing"], "missing: no such folder"),
    (["onnx", "{tmp}/model.pt"], "no such file"),
])
def test_options_refused_up_front(good, tmp_path, args, message):
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("text,text_b,label\n" + "".join(f"q {i},p {i},{('rotten', 'fresh')[i % 2]}\n"
                                                      for i in range(40)))
    names = {"csv": csv_path, "pairs": pairs, "tmp": tmp_path,
             "onnx": good / f"{MODEL.stem}.onnx",
             "tflite": good / f"{MODEL.stem}.tflite"}
    before = snapshot(tmp_path)
    assert_one_line_error(run(*[str(a).format(**names) for a in args]), 2, message)
    assert snapshot(tmp_path) == before


def test_truncated_checkpoint_says_so(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(MODEL.read_bytes()[:100_000])
    assert_one_line_error(run("predict", path, "fine"), 2, "truncated or damaged checkpoint")


LONG = "a " * 70_000  # over the csv module's default 131,072-character field limit


@pytest.mark.parametrize("content, message", [
    ('text,label\ngood film,1\n"unterminated,0\n', "line 3: not valid CSV"),
    ("text,label\ngood film,1,extra\n", "line 2 has more fields than the header"),
    ("words,label\ngood film,1\n", "missing column text"),
    ("text,label,label\ngood film,1,0\n", "column label appears twice"),
    (b"text,label\n\xff\xfe,1\n", "not UTF-8 text"),
])
@pytest.mark.parametrize("command", ["predict", "finetune", "evaluate"])
def test_bad_csv(tmp_path, content, message, command):
    path = tmp_path / "texts.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = {"predict": ["predict", MODEL, "--file", path],
            "finetune": ["train", "finetune", "--init", "uno-eelbert", "--task", f"csv:{path}",
                         "--out", tmp_path / "m.pt", "--steps", "1"],
            "evaluate": ["evaluate", MODEL, "--task", f"csv:{path}"]}[command]
    assert_one_line_error(run(*args), 2, message)
    assert not (tmp_path / "m.pt").exists()


def test_csv_fields_of_any_length(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text(f'text\n"{LONG}"\nshort\n')
    result = run("predict", MODEL, "--file", path, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == \
        [LONG, "short"]


def test_predict_takes_a_text_first(tmp_path):
    result = run("predict", "a wonderful film")
    assert result.exit_code == 0, result.output
    label, logits, text = result.stdout.strip().split("\t")
    assert text == "a wonderful film" and len(logits.split()) == 2


def test_reports_never_replace_inputs_or_unnamed_files(good, tmp_path):
    onnx = good / f"{MODEL.stem}.onnx"
    before = snapshot(good)
    kept = tmp_path / "kept.json"
    kept.write_text("mine")
    assert_one_line_error(run("audit", onnx, "--json", onnx, "--force"), 2, "also an input")
    assert_one_line_error(run("audit", onnx, "--markdown", kept), 2, "--force")
    assert_one_line_error(run("bench", onnx, "--json", kept, "--runs", "1"), 2, "--force")
    assert_one_line_error(run("bench", MODEL, "--json", MODEL, "--force"), 2, "also an input")
    assert_one_line_error(run("hash-cost", "-o", tmp_path, "--json", kept), 2, "--force")
    assert_one_line_error(run("compare", "--json", kept), 2, "--force")
    assert kept.read_text() == "mine" and snapshot(good) == before
    result = run("audit", onnx, "--json", kept, "--force")
    assert result.exit_code == 0 and json.loads(kept.read_text())[0]["artifact"] == onnx.name


def test_finetune_never_replaces_its_init_or_an_existing_model(tmp_path):
    init = tmp_path / "init.pt"
    shutil.copy(MODEL, init)
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    before = snapshot(tmp_path)
    common = ["train", "finetune", "--task", f"csv:{csv_path}", "--steps", "1", "--force"]
    assert_one_line_error(run(*common, "--init", init, "--out", init), 2, "also an input")
    common.remove("--force")
    assert_one_line_error(run(*common, "--init", "uno-eelbert", "--out", init), 2, "--force")
    assert snapshot(tmp_path) == before


def test_output_folder_is_a_file(good, tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    assert_one_line_error(run("onnx", MODEL, "-o", file), 2, "is a file, not a folder")
    assert good.is_dir()  # the fixture's export created new/folder


def cli(*args, limit_kb: int | None = None) -> subprocess.Popen:
    """The installed console script in a fresh process; ``limit_kb``: the largest file it may
    write, as a full disk would stop it (the shell's file-size limit, with SIGXFSZ ignored so
    that the write fails with an OSError)."""
    command = [SCRIPT, *map(str, args)]
    if limit_kb:
        command = ["bash", "-c", f"ulimit -f {limit_kb}; trap '' XFSZ; exec \"$@\"", "-",
                   *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def one_line(proc: subprocess.Popen, status: int, message: str) -> None:
    """One line on stderr besides a progress bar's."""
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == status, err
    lines = [line for line in err.strip().splitlines() if "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("eelbert-export: error: ") and \
        message in lines[0], err


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "coreml"])
def test_full_disk_during_export(tmp_path, fmt):
    one_line(cli(fmt, MODEL, "-o", tmp_path, "--no-verify", limit_kb=300), 2,
             "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_after_finetuning(tmp_path):
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    one_line(cli("train", "finetune", "--init", "uno-eelbert", "--task", f"csv:{csv_path}",
                 "--out", tmp_path / "m.pt", "--steps", "2", limit_kb=200), 2,
             "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_export_cleans_up(tmp_path, signum, status):
    proc = cli("tflite", MODEL, "-o", tmp_path, "--no-verify")
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".export-*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # interrupt it mid-conversion, its staging folder in place
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status and err.strip() == \
        f"eelbert-export: stopped by {signal.Signals(signum).name}", err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delay", [0.1, 0.5, 1.0])
def test_ctrl_c_during_start_up(delay):
    """Before the command line's handlers are in place the process just ends; after, it says
    so in one line (inspect imports torch: seconds)."""
    proc = cli("inspect")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) in ((-signal.SIGINT, ""),
                                      (130, "eelbert-export: stopped by SIGINT\n")), err


def test_text_that_is_not_utf8_is_refused():
    """Bytes that are not UTF-8 in an argument reach Python as lone surrogates; predict names
    the byte instead of failing inside the tokenizer."""
    proc = subprocess.run([str(SCRIPT), "predict", MODEL, b"bad \xff byte"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "eelbert-export: error: the text b'bad \\xff byte' is not UTF-8 (byte 0xff)", proc.stderr


def test_audit_never_replaces_what_it_audits(good, tmp_path):
    """An artifact found in an audited folder (or its sidecar) is an input even with --force,
    and two report options naming one file are refused."""
    before = snapshot(good)
    for target in (f"{MODEL.stem}.onnx", f"{MODEL.stem}.onnx.json"):
        result = run("audit", good, "--json", good / target, "--force")
        assert_one_line_error(result, 2, "is also an input")
    report = tmp_path / "report"
    result = run("audit", good, "--json", report, "--markdown", report)
    assert_one_line_error(result, 2, "is named for two outputs")
    assert snapshot(good) == before and not report.exists()


def test_failed_or_stopped_runs_leave_no_folder_or_baseline(tmp_path):
    """A refused export leaves no -o folder it created; `all` stopped mid-run leaves neither
    its baseline checkpoint nor its folder, so the rerun needs no --force."""
    result = run("onnx", tmp_path / "missing.pt", "-o", tmp_path / "new" / "out")
    assert_one_line_error(result, 2, "missing.pt")
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "all"
    proc = cli("all", MODEL, "-o", out, "--format", "onnx", "--data", tmp_path / "none")
    deadline = time.monotonic() + 120
    while not list(out.glob(".all-*/*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.parametrize("damage, message", [
    ('{"text": "cut sho', "dev.jsonl line 3: not JSON (truncated?)"),
    ('{"text": "no label"}', "dev.jsonl line 3: not a sentiment row"),
])
@pytest.mark.parametrize("command", ["evaluate", "onnx"])
def test_damaged_prepared_data(tmp_path, damage, message, command):
    """Prepared splits damaged by hand or a cut copy: one line naming the file and line, and
    how to rebuild it; verification never falls back to the sample over damaged data."""
    folder = tmp_path / "data" / "tasks" / "sentiment"
    folder.mkdir(parents=True)
    good_rows = [json.dumps({"text": f"a fine film {i}", "label": ("rotten", "fresh")[i % 2]})
                 for i in range(4)]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("\n".join(good_rows) + "\n")
    (folder / "dev.jsonl").write_text("\n".join(good_rows[:2] + [damage]) + "\n")
    args = ["evaluate", MODEL, "--task", "sentiment", "--split", "dev"] if command == "evaluate" \
        else ["onnx", MODEL, "-o", tmp_path / "out"]
    result = run(*args, "--data", tmp_path / "data")
    assert_one_line_error(result, 2, message)
    assert "data prepare" in result.stderr and not (tmp_path / "out").exists()


def test_budgets_out_of_range_or_malformed(good, tmp_path, monkeypatch):
    result = run("audit", good, "--budget", "1" * 400)
    assert_one_line_error(result, 2, "not a size")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.eelbert-export]\nbudgets = ["1.2MB"]\n')
    assert_one_line_error(run("audit", good), 2, "must map artifact globs to sizes")


def test_force_never_breaks_another_artifact(good, tmp_path):
    """--force replaces the artifact it names, never a front-end file another artifact in the
    folder was exported with; once no other artifact uses it, it may."""
    out = tmp_path / "out"
    shutil.copytree(good, out)
    before = snapshot(out)
    shorter = ("tflite", MODEL, "-o", out, "--seq-len", "64", "--no-verify", "--force")
    assert_one_line_error(run(*shorter), 2, f"tokenizer.json belongs to {MODEL.stem}.onnx, "
                                            "and this model's text front end differs")
    assert snapshot(out) == before
    assert run("predict", out / f"{MODEL.stem}.onnx", "--vectors").exit_code == 0
    for name in (f"{MODEL.stem}.onnx", f"{MODEL.stem}.onnx.json",
                 f"{MODEL.stem}.onnx.vectors.jsonl"):
        (out / name).unlink()
    result = run(*shorter)
    assert result.exit_code == 0, result.output
    assert run("predict", out / f"{MODEL.stem}.tflite", "--vectors").exit_code == 0


def test_concurrent_exports_to_one_name(tmp_path):
    """Two models exported to one name at once: one wins, the other writes nothing, and the
    artifact keeps its own sidecar and vectors."""
    models = {}
    for name, source in (("a", MODEL), ("b", MODEL.with_name("uno-eelbert-sentiment.pt"))):
        (tmp_path / name).mkdir()
        models[name] = shutil.copy(source, tmp_path / name / "m.pt")
    out = tmp_path / "out"
    procs = {name: cli("onnx", path, "-o", out, "--no-verify") for name, path in models.items()}
    results = {name: (proc.communicate(timeout=600), proc.returncode)
               for name, proc in procs.items()}
    assert sorted(status for _, status in results.values()) == [0, 2], results
    winner = next(name for name, (_, status) in results.items() if status == 0)
    loser = next(name for name in results if name != winner)
    assert "m.onnx already exists" in results[loser][0][1], results[loser]
    artifact = out / "m.onnx"
    data = json.loads((out / "m.onnx.json").read_text())
    assert data["model"]["sha256"] == hashlib.sha256(Path(models[winner]).read_bytes()).hexdigest()
    assert run("predict", artifact, "--vectors").exit_code == 0
    assert not list(out.glob(".*"))


def test_no_writable_temporary_folder():
    """With no temporary folder to write (here /tmp and /var/tmp mounted read-only in a mount
    namespace), an export is refused in one line before torch's compile caches fail."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode or \
            not Path("/dev/shm").is_dir() or str(SCRIPT).startswith(("/tmp/", "/var/tmp/")):
        pytest.skip("needs a mount namespace (unshare -m), /dev/shm, and the venv outside /tmp")
    out = Path("/dev/shm") / f"eelbert-battery-{time.time_ns()}"
    mounts = "mount -t tmpfs -o ro tmpfs /tmp && mount -t tmpfs -o ro tmpfs /var/tmp"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f'{mounts} && cd /proc && exec "$@"', "-",
                           str(SCRIPT), "onnx", str(MODEL), "-o", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": "/nonexistent"})
    assert proc.returncode == 2 and proc.stderr.startswith(
        "eelbert-export: error: no temporary folder can be written (TMPDIR=/nonexistent") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()


def test_read_only_home_is_quiet(good):
    """onnxruntime's telemetry cannot keep its device id in a read-only HOME: predict still
    says nothing on stderr."""
    proc = subprocess.run([str(SCRIPT), "predict", good / f"{MODEL.stem}.onnx", "a fine film"],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
                          | {"HOME": "/dev/null"})
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout.count("\n") == 1, \
        proc.stderr


def test_sigterm_as_fine_tuning_ends(tmp_path):
    """SIGTERM at moments around the end of a short fine-tune: each run either finished first
    (exit 0, its checkpoint) or says it was stopped (143, one line), never a traceback, never
    killed by the signal itself."""
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))

    def finetune(out: Path) -> subprocess.Popen:
        return cli("train", "finetune", "--init", "uno-eelbert", "--task", f"csv:{csv_path}",
                   "--out", out, "--steps", "20", "--eval-every", "10")
    start = time.monotonic()
    first = finetune(tmp_path / "whole.pt")
    assert first.wait(timeout=300) == 0
    took = time.monotonic() - start
    for i, fraction in enumerate((0.8, 0.9, 0.95, 0.98, 1.0, 1.02)):
        out = tmp_path / f"m{i}.pt"
        proc = finetune(out)
        time.sleep(took * fraction)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        lines = [line for line in err.strip().splitlines() if "%|" not in line]
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert (proc.returncode == 0 and out.is_file()) or \
            (proc.returncode == 143 and lines == ["eelbert-export: stopped by SIGTERM"]), \
            (proc.returncode, err)
        assert not list(tmp_path.glob(".*")), sorted(tmp_path.iterdir())


def test_predict_shows_its_rate_on_long_files(good, tmp_path):
    """A long file gets a bar with its rate on stderr; every line is predicted, in order."""
    texts = [f"film number {i} was {'good' if i % 2 else 'bad'}" for i in range(1500)]
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(texts) + "\n")
    proc = subprocess.run([str(SCRIPT), "predict", good / f"{MODEL.stem}.onnx", "--file", file],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[2] for line in proc.stdout.splitlines()] == texts
    assert "predict: 100%" in proc.stderr and "texts/s" in proc.stderr, proc.stderr
