"""Regenerate the golden hash vectors from the reference: ``python tests/golden/generate.py``.

Only for a deliberate, versioned change of the hash spec; the vectors pin the embedding so that
models trained today keep their meaning."""

import json
from pathlib import Path

import numpy as np

from eelbert_export.hashing import PAPER_SPEC, HashSpec, embed_reference

TOKENS = ["[CLS]", "[SEP]", "[UNK]", "", "a", "the", "##ing", "##s", "telecommunications",
          "naïve", "日本", "🙂", "x" * 25, "Hello", "don't", "ß", "\u0301", "42"]


def main() -> None:
    data = {"tokens": TOKENS, "specs": []}
    for spec in (HashSpec(), PAPER_SPEC):
        bits = embed_reference(TOKENS, spec).view(np.uint32)
        data["specs"].append({"spec": spec.to_dict(),
                              "float32_bits": [[f"{b:08x}" for b in row] for row in bits]})
    path = Path(__file__).with_name("hash_v1.json")
    path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
