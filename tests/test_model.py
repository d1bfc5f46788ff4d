import pytest
import torch

from eelbert_export.checkpoint import new_model
from eelbert_export.errors import SpecError
from eelbert_export.hashing import HashSpec
from eelbert_export.model import (
    Classifier,
    MaskedLM,
    ModelConfig,
    default_hash_spec,
    named_configs,
)
from eelbert_export.reports.summary import summarize
from eelbert_export.text import TextEncoder, TextSpec, vocabulary

from .conftest import tensors

SENTENCES = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate",
             "Über-long compound: antidisestablishmentarianism!", ""]


def build(name: str, kind: str = "classifier"):
    torch.manual_seed(0)
    config = named_configs()[name]
    return new_model(kind, config, default_hash_spec(config)).eval()


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(TextSpec(), HashSpec().max_chars)


def test_named_configs_follow_the_paper():
    configs = named_configs()
    assert set(configs) == {"eelbert-base", "eelbert-mini", "eelbert-tiny", "uno-eelbert",
                            "uno-eelbert-wide", "uno-eelbert-ngrams", "bert-tiny", "bert-mini"}
    uno, tiny = summarize(build("uno-eelbert")), summarize(build("bert-tiny"))
    assert uno["fp32_bytes"] <= 1_200_000  # UNO-EELBERT's 1.2 MB
    assert summarize(build("uno-eelbert-ngrams"))["fp32_bytes"] <= 1_200_000
    assert 4.3e6 < tiny["params"] < 4.45e6  # BERT-tiny's 4.4 M
    assert tiny["fp32_bytes"] / uno["fp32_bytes"] >= 14


def test_classifier_logits_ignore_padding(encoder):
    model = build("uno-eelbert")
    short, padded = encoder.encode(SENTENCES), encoder.encode(SENTENCES, pad_to=40)
    with torch.no_grad():
        a = model(*tensors(short, "token_codes", "attention_mask", "token_type_ids"))
        b = model(*tensors(padded, "token_codes", "attention_mask", "token_type_ids"))
    assert a.shape == (4, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_vocabulary_cache_gives_the_same_logits(encoder):
    model = build("eelbert-tiny")
    batch = encoder.encode(SENTENCES)
    model.encoder.embeddings.word.cache_vocabulary(vocabulary())
    with torch.no_grad():
        direct = model(*tensors(batch, "token_codes", "attention_mask", "token_type_ids"))
        cached = model(*tensors(batch, "token_codes", "attention_mask", "token_type_ids",
                                "input_ids"))
    torch.testing.assert_close(direct, cached, rtol=0, atol=0)


def test_table_baseline_takes_ids(encoder):
    model = build("bert-tiny")
    batch = encoder.encode(SENTENCES)
    with torch.no_grad():
        logits = model(*tensors(batch, "input_ids", "attention_mask", "token_type_ids"))
    assert logits.shape == (4, 2)


def test_mlm_head_has_no_vocabulary_decoder(encoder):
    model = build("uno-eelbert", kind="mlm")
    assert isinstance(model, MaskedLM)
    batch = encoder.encode(SENTENCES[:2])
    with pytest.raises(RuntimeError, match="cache_vocabulary"):
        model(*tensors(batch, "token_codes", "attention_mask", "token_type_ids"))
    hidden = model.encoder.config.hidden
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder")) \
        == hidden * hidden + 3 * hidden + model.encoder.config.vocab_size


def test_config_validation():
    with pytest.raises(SpecError, match="divisible"):
        ModelConfig(name="x", layers=1, hidden=130, heads=4, ffn=8)
    with pytest.raises(SpecError, match="embedding"):
        ModelConfig(name="x", layers=1, hidden=8, heads=2, ffn=8, embedding="lookup")
    with pytest.raises(SpecError, match="needs a hash spec"):
        Classifier(named_configs()["uno-eelbert"], None)
    # A hash narrower or wider than the model is projected to its hidden size.
    projected = Classifier(named_configs()["uno-eelbert"], HashSpec(dim=64))
    assert projected.encoder.embeddings.project.weight.shape == (128, 64)
