"""The ``eelbert-export`` command line. Typed errors become one-line messages and exit statuses
here and nowhere else."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eelbert_export import checkpoint
from eelbert_export.collisions import format_stats, hash_stats
from eelbert_export.errors import EelbertError, InputError, TargetMissed
from eelbert_export.hashing import PAPER_SPEC, HashSpec
from eelbert_export.model import default_hash_spec, named_configs
from eelbert_export.summary import format_summary, summarize
from eelbert_export.zoo import vocab_path

# First match wins: bad input is 2, a missed target (or any other failure) is 1.
EXIT_STATUS = ((InputError, 2), (TargetMissed, 1), (EelbertError, 1))
NAMED_SPECS = {"portable": HashSpec(), "int64": PAPER_SPEC}


class Main(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EelbertError as e:
            click.echo(f"eelbert-export: error: {e}", err=True)
            ctx.exit(next(status for cls, status in EXIT_STATUS if isinstance(e, cls)))


@click.group(cls=Main)
@click.version_option(package_name="eelbert-export")
def main() -> None:
    """Export tiny EELBERT text models to ONNX, Core ML and TFLite."""


def load_model(name_or_path: str):
    """A named config (fresh weights) or a checkpoint file -> (title, model)."""
    configs = named_configs()
    if name_or_path in configs:
        config = configs[name_or_path]
        return f"{name_or_path} (config)", checkpoint.new_model(
            "classifier", config, default_hash_spec(config))
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".pt":
        return str(path), checkpoint.load(path).model
    raise InputError(f"{name_or_path!r} is neither a checkpoint file nor a named config "
                     f"({', '.join(configs)})")


@main.command()
@click.argument("model_or_config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(model_or_config: str, as_json: bool) -> None:
    """Layers, parameters by group, fp32 bytes and the hash spec of a model or named config."""
    title, model = load_model(model_or_config)
    summary = summarize(model)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(title, summary))


def read_spec(value: str) -> HashSpec:
    if value in NAMED_SPECS:
        return NAMED_SPECS[value]
    try:
        return HashSpec.from_json(Path(value).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read hash spec {value}: {getattr(e, 'strerror', None) or e}") \
            from None


def read_vocab(path: Path) -> list[str]:
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not any(tokens):
        raise InputError(f"{path}: the vocabulary is empty")
    if any("\x00" in t for t in tokens):
        raise InputError(f"{path}: a token contains NUL")
    return tokens


@main.command("hash-stats")
@click.option("--spec", "spec_name", default="portable", show_default=True,
              help="portable, int64 (paper-faithful), or a hash spec JSON file.")
@click.option("--vocab", type=click.Path(path_type=Path), default=None,
              help="One token per line [default: the shipped bert-base-uncased vocabulary].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def hash_stats_command(spec_name: str, vocab: Path | None, as_json: bool) -> None:
    """Collisions of the hash on a vocabulary; exits 1 if a target is missed."""
    stats = hash_stats(read_vocab(vocab or vocab_path()), read_spec(spec_name))
    click.echo(json.dumps(stats, indent=2) if as_json else format_stats(stats))
    if not stats["passed"]:
        raise TargetMissed("the hash spec misses its collision targets")
