"""The byte tokenizer: round trips, specials, and the task layout."""

from agents.tokenizer import BOS_ID, EOS_ID, PAD_ID, SEP_ID, VOCAB_SIZE, ByteTokenizer


def test_round_trip_of_unicode_text() -> None:
    tok = ByteTokenizer()
    text = "cap zorvia → Zürich ✓"
    assert tok.decode(tok.encode(text)) == text


def test_specials_sit_above_the_bytes_and_fill_the_vocabulary() -> None:
    assert sorted({PAD_ID, BOS_ID, EOS_ID, SEP_ID}) == [256, 257, 258, 259]
    assert VOCAB_SIZE == 260


def test_decode_stops_at_eos_and_skips_other_specials() -> None:
    tok = ByteTokenizer()
    assert tok.decode([BOS_ID, *tok.encode("ab"), PAD_ID, EOS_ID, *tok.encode("zz")]) == "ab"


def test_task_layout_is_bos_prompt_sep_then_answer_eos() -> None:
    tok = ByteTokenizer()
    assert tok.prompt_ids("hi") == [BOS_ID, 104, 105, SEP_ID]
    assert tok.answer_ids("ok") == [111, 107, EOS_ID]
