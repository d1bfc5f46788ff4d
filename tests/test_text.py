import numpy as np
import pytest

from eelbert_export.errors import SpecError
from eelbert_export.hashing import token_codes
from eelbert_export.text import TextEncoder, TextSpec

MAX_CHARS = 20


@pytest.fixture(scope="module")
def wordpiece():
    return TextEncoder(TextSpec(), MAX_CHARS)


@pytest.fixture(scope="module")
def words():
    return TextEncoder(TextSpec(mode="words"), MAX_CHARS)


def test_wordpiece_tokens_keep_continuations_and_literal_specials(wordpiece):
    batch = wordpiece.encode(["Héllo, EMBEDDINGS!"])
    assert batch.tokens[0] == ["[CLS]", "hello", ",", "em", "##bed", "##ding", "##s", "!", "[SEP]"]
    assert batch.input_ids[0, :2].tolist() == [101, 7592]
    expected = token_codes(batch.tokens[0], MAX_CHARS)
    assert np.array_equal(batch.token_codes[0], expected)
    assert batch.token_codes.dtype == batch.attention_mask.dtype == np.int32


def test_pairs_get_segment_ids_and_longest_first_truncation():
    encoder = TextEncoder(TextSpec(max_length=12), MAX_CHARS)
    batch = encoder.encode(["is the sky blue ?"], pairs=["a " * 40])
    tokens = batch.tokens[0]
    assert len(tokens) == 12 and tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2
    first_sep = tokens.index("[SEP]")
    assert tokens[1:first_sep] == ["is", "the", "sky", "blue"]  # the longer side was cut
    assert batch.token_type_ids[0].tolist() == [0] * (first_sep + 1) + [1] * (11 - first_sep)


def test_padding_masks_and_zero_codes(wordpiece):
    batch = wordpiece.encode(["a b c d", ""], pad_to=16)
    assert batch.token_codes.shape == (2, 16, MAX_CHARS)
    assert batch.attention_mask.sum(axis=1).tolist() == [6, 2]
    assert batch.tokens[1] == ["[CLS]", "[SEP]"]
    assert np.abs(batch.token_codes[1, 2:]).sum() == 0
    with pytest.raises(ValueError, match="pad_to"):
        wordpiece.encode(["a b c d"], pad_to=3)


def test_words_mode_needs_no_vocabulary(words):
    batch = words.encode(["Telecommunications   naïve-ish 日本"])
    assert batch.tokens[0] == ["[CLS]", "telecommunications", "naive", "-", "ish", "日", "本",
                               "[SEP]"]
    assert batch.input_ids is None
    with pytest.raises(SpecError, match="wordpiece"):
        batch.model_tokens("table")


def test_control_characters_and_nul_are_cleaned(wordpiece):
    batch = wordpiece.encode(["a\x00b\x07c"])
    assert "\x00" not in "".join(batch.tokens[0])


def test_spec_round_trip_and_vocabulary_check():
    spec = TextSpec(mode="wordpiece", max_length=64)
    assert TextSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="different WordPiece vocabulary"):
        TextSpec.from_dict(spec.to_dict() | {"vocab_sha256": "0" * 64})
    with pytest.raises(SpecError, match="newer"):
        TextSpec.from_dict(TextSpec(mode="words").to_dict() | {"version": 9})
