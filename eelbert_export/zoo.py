"""Where the shipped model zoo lives: ``models/`` in a checkout, ``eelbert_export/models`` inside
an installed wheel (the build copies it there)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    for candidate in (PACKAGE_DIR / "models", PACKAGE_DIR.parent / "models"):
        if (candidate / "configs.json").is_file():
            return candidate
    raise FileNotFoundError("the models/ folder is missing from this installation")


def vocab_path() -> Path:
    return models_dir() / "vocab.txt"


def default_model() -> Path:
    """The product's default model: UNO-EELBERT with an n-gram table, fine-tuned on Rotten
    Tomatoes sentiment (chosen by the zoo's comparison, docs/models.md)."""
    return models_dir() / "uno-eelbert-ngrams-sentiment.pt"
