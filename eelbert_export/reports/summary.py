"""What a model is made of: parameters and bytes by part of the model (``eelbert-export inspect``),
grouped and named as the size audit groups an artifact's tensors, so a model's bytes can be
followed from the checkpoint to every exported artifact.
"""

from __future__ import annotations

from torch import nn

from eelbert_export.model import HashEmbedding, MaskedLM
from eelbert_export.reports.audit import GROUPS, named_group

MLM_HEAD = "MLM head (training only)"


def summarize(model: nn.Module) -> dict:
    """Parameter counts and fp32 bytes by group, plus the hash spec and its constants."""
    encoder = model.encoder
    counts = dict.fromkeys([g for g, _ in GROUPS] + [MLM_HEAD], 0)
    for name, param in model.named_parameters():
        head = isinstance(model, MaskedLM) and not name.startswith("encoder.")
        counts[MLM_HEAD if head else named_group(name)] += param.numel()
    deployable = {g: n for g, n in counts.items() if g != MLM_HEAD}
    word = encoder.embeddings.word
    constants = [word.multipliers, word.offsets] if isinstance(word, HashEmbedding) else None
    config = encoder.config
    return {
        "config": config.to_dict(),
        "kind": "mlm" if isinstance(model, MaskedLM) else "classifier",
        "groups": [{"group": g, "params": n, "fp32_bytes": 4 * n} for g, n in counts.items() if n],
        "params": sum(deployable.values()),
        "fp32_bytes": 4 * sum(deployable.values()),
        "training_only_params": counts[MLM_HEAD],
        "hash_constants": None if constants is None else {
            "count": sum(c.numel() for c in constants),
            "dtype": str(constants[0].dtype).removeprefix("torch."),
            "bytes": sum(c.numel() * c.element_size() for c in constants)},
        "hash_spec": encoder.hash_spec.to_dict() if encoder.hash_spec else None,
    }


def format_summary(title: str, s: dict) -> str:
    c = s["config"]
    lines = [f"{title}: {c['layers']} layers, hidden {c['hidden']}, {c['heads']} heads, "
             f"FFN {c['ffn']}, {c['max_positions']} positions, {c['embedding']} embedding",
             f"  {'group':<28}{'params':>12}{'fp32 bytes':>14}"]
    for g in s["groups"]:
        lines.append(f"  {g['group']:<28}{g['params']:>12,}{g['fp32_bytes']:>14,}")
    lines.append(f"  {'total (deployable)':<28}{s['params']:>12,}{s['fp32_bytes']:>14,}"
                 f"   ({s['fp32_bytes'] / 1e6:.3f} MB)")
    h = s["hash_spec"]
    projected = f", projected to {c['hidden']}" if h and h["dim"] != c["hidden"] else ""
    if h:
        lines.append(f"  hash: {h['variant']} v{h['version']}, n-gram orders 1-{h['orders']}, "
                     f"max_chars {h['max_chars']}, moduli {h['moduli']}, bases {h['bases']}, "
                     f"seed {h['seed']}")
    if h and h.get("table"):
        lines.append(f"  n-gram table: {h['table']:,} rows x {h['dim']} (+ padding row), "
                     f"{h['probes']} rows per n-gram, averaged{projected}")
    elif s["hash_constants"]:
        k = s["hash_constants"]
        lines.append(f"  fixed projection: {h['dim']} dims, buckets {h['buckets']}; "
                     f"{k['count']} {k['dtype']} multipliers and offsets ({k['bytes']:,} bytes, "
                     f"derived from the spec, not stored in checkpoints){projected}")
    return "\n".join(lines)
