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


@pytest.fixture(scope="session", autouse=True)
def sidecars_match_the_schema():
    """Every sidecar an export writes in this session, any format and mode, validates against
    the committed JSON Schema (a real validator, before the file is written)."""
    from eelbert_export.exporters import pipeline

    from .schema import problems

    write_unit = pipeline.write_unit

    def validated(request, staged, sidecar, *rest):
        errors = problems(sidecar.to_dict())
        assert not errors, f"{sidecar.artifact}: sidecar breaks docs/sidecar.schema.json: {errors}"
        return write_unit(request, staged, sidecar, *rest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "write_unit", validated)
        yield
