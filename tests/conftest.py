import pytest
import torch

from eelbert_export import checkpoint
from eelbert_export.checkpoint import Checkpoint, new_model
from eelbert_export.model import default_hash_spec, named_configs
from eelbert_export.text import TextSpec


def fresh_checkpoint(name: str = "uno-eelbert") -> Checkpoint:
    torch.manual_seed(0)
    config = named_configs()[name]
    model = new_model("classifier", config, default_hash_spec(config)).eval()
    return Checkpoint(model, TextSpec(), labels=["rotten", "fresh"],
                      provenance={"note": "untrained, for tests"})


@pytest.fixture(scope="session")
def fresh():
    """A factory of untrained checkpoints of a named config (seeded, so two are identical)."""
    return fresh_checkpoint


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "uno.pt"
    checkpoint.save(path, fresh_checkpoint())
    return path


def tensors(batch, *names):
    """An encoded batch's arrays as the torch tensors a model takes (no copy)."""
    return tuple(torch.from_numpy(getattr(batch, name)) for name in names)
