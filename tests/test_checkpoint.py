import os

import pytest
import torch

from eelbert_export import checkpoint
from eelbert_export.errors import InputError
from eelbert_export.files import atomic_path

from .conftest import tensors


def test_round_trip_predicts_the_same(checkpoint_path, fresh):
    original = fresh()
    loaded = checkpoint.load(checkpoint_path)
    assert loaded.kind == "classifier" and loaded.labels == ["rotten", "fresh"]
    assert loaded.config == original.config and loaded.hash_spec == original.hash_spec
    assert loaded.text_spec == original.text_spec and loaded.provenance == original.provenance
    batch = loaded.text_encoder().encode(["a moving, funny film", "dull and overlong"])
    args = tensors(batch, "token_codes", "attention_mask", "token_type_ids")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(*args), original.model(*args), rtol=0, atol=0)


def test_file_holds_only_plain_data_and_no_hash_state(checkpoint_path):
    data = torch.load(checkpoint_path, weights_only=True)
    assert set(data) == {"format", "format_version", "kind", "config", "hash_spec", "text_spec",
                         "labels", "provenance", "pairs", "state_dict"}
    assert not any("multipliers" in k or "vocab_cache" in k for k in data["state_dict"])


def test_table_model_round_trip(tmp_path, fresh):
    path = tmp_path / "bert-tiny.pt"
    checkpoint.save(path, fresh("bert-tiny"))
    loaded = checkpoint.load(path)
    assert loaded.hash_spec is None and loaded.config.embedding == "table"


def test_unwritable_output_leaves_nothing(tmp_path, fresh):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write"):
        checkpoint.save(blocker / "model.pt", fresh())
    with pytest.raises(InputError, match="does not exist"):
        checkpoint.save(tmp_path / "missing" / "model.pt", fresh())
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert os.listdir(tmp_path) == ["file"]


def test_existing_file_is_kept_without_force(tmp_path):
    target = tmp_path / "a.pt"
    target.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"), atomic_path(target, force=False):
        pass
    assert target.read_bytes() == b"keep"


def test_folder_artifact_is_replaced_whole(tmp_path):
    target = tmp_path / "m.mlpackage"
    (target / "old").mkdir(parents=True)
    with pytest.raises(InputError, match="already exists"), atomic_path(target, False, True):
        pass
    with atomic_path(target, force=True, folder=True) as tmp:
        (tmp / "new").mkdir(parents=True)
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]
