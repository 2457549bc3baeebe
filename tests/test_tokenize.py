"""seqtag.tokenize: offsets always slice back to the token, PTB/CoNLL words, sentences, characters, mode choice."""

import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.errors import SeqtagInputError
from seqtag.tokenize import Token, mode_for_vocabulary, tokenize, tokenize_pretokenized

ROOT = Path(__file__).resolve().parent.parent
TRICKY = [
    "",
    "   ",
    " \t\n \r\n\u3000\u00a0",
    "two  spaces\tand\ttabs",
    "line one\nline two\r\nline three",
    "Café naïve nai\u0308ve हिन्दी Zürich",
    "emoji 👨\u200d👩\u200d👧 flag 🇯🇵 thumbs 👍🏽 keycap 1\ufe0f\u20e3!",
    "中文 混合 English 文本。「引号」！",
    "\u0301 a mark first",
    "ends with space.  ",
    "'' `` '' ... -- --- U.S.\" (x).",
]


def texts(sentences: list[list[Token]]) -> list[list[str]]:
    return [[t.text for t in s] for s in sentences]


def words(text: str) -> list[str]:
    return [t.text for s in tokenize(text) for t in s]


def check_offsets(text: str, sentences: list[list[Token]]) -> None:
    """Offsets slice the input back to the token, go forward, and every non-space character is in one token."""
    tokens = [t for s in sentences for t in s]
    assert all(sentences), "an empty sentence"
    for tok in tokens:
        assert text[tok.char_start : tok.char_end] == tok.text
        assert tok.text and not any(c.isspace() for c in tok.text), tok
    ends = [0] + [p for t in tokens for p in (t.char_start, t.char_end)] + [len(text)]
    assert ends == sorted(ends)
    assert all(not text[a:b].strip() for a, b in zip(ends[::2], ends[1::2])), "a character was dropped"


@pytest.mark.parametrize("mode", ["words", "chars"])
@pytest.mark.parametrize("text", TRICKY)
def test_offsets_slice_back_on_tricky_inputs(text, mode):
    sentences = tokenize(text, mode)
    check_offsets(text, sentences)
    assert (sentences == []) == (text.strip() == "")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("aZ1.,!?'\"’-$()\n\t 中。！”\u0301\u200d😀@/&") + ["U.S.", "n't", "Mr.", "www."])))
def test_offsets_slice_back_on_any_text(pieces):
    text = "".join(pieces)
    for mode in ("words", "chars"):
        check_offsets(text, tokenize(text, mode))


def test_offsets_count_from_the_start_of_the_whole_input():
    text = "First part.\n\nSecond, here."
    second = tokenize(text)[1]
    assert second[0] == Token("Second", 13, 19) and second[-1] == Token(".", 25, 26)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I visited Tokyo.", "I visited Tokyo ."),
        ("I don't know, she can't.", "I do n't know , she ca n't ."),
        ("John's car isn't here; they're gone.", "John 's car is n't here ; they 're gone ."),
        ("The U.S. economy grew.", "The U.S. economy grew ."),
        ("He moved to the U.S.", "He moved to the U.S ."),
        ("It cost $12.50, or US$9.", "It cost $ 12.50 , or US$ 9 ."),
        ('He said "hi" to (EU) [x].', 'He said " hi " to ( EU ) [ x ] .'),
        (
            "A state-of-the-art, U.S.-led 2-1 win on 1996-08-28.",
            "A state-of-the-art , U.S.-led 2-1 win on 1996-08-28 .",
        ),
        ("3,000 fans at 5:30 p.m. saw 50% of it...", "3,000 fans at 5:30 p.m. saw 50 % of it ..."),
        ("O'Brien met Mr. Smith at AT&T.", "O'Brien met Mr. Smith at AT&T ."),
        ("Mail a.b@c.com or see https://x.org/a?b=1.", "Mail a.b@c.com or see https://x.org/a?b=1 ."),
    ],
)
def test_words_are_split_the_treebank_and_conll_way(text, expected):
    assert words(text) == expected.split()


def test_sentences_do_not_end_after_abbreviations_or_initials():
    text = "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday with J. Doe. Then he left!"
    assert [s[0] for s in texts(tokenize(text))] == ["Mr.", "He", "Then"]


def test_sentence_end_takes_its_closing_quote_and_a_list_number_is_not_a_sentence():
    assert texts(tokenize('He said "Stop." Then he left.')) == [
        ["He", "said", '"', "Stop", ".", '"'],
        ["Then", "he", "left", "."],
    ]
    assert texts(tokenize('"Why?" he asked. Great! :)')) == [
        ['"', "Why", "?", '"', "he", "asked", "."],
        ["Great", "!", ":)"],
    ]
    assert texts(tokenize("12. Jan Ullrich (Germany) 5:00:00"))[0][:2] == ["12.", "Jan"]


def test_paragraphs_split_at_blank_lines_and_a_single_newline_does_not_end_a_sentence():
    text = "First para\nstill the first\n\nSecond para\r\n \t\r\nThird"
    assert texts(tokenize(text)) == [["First", "para", "still", "the", "first"], ["Second", "para"], ["Third"]]


def test_words_mode_ends_sentences_after_wide_terminators_without_a_space():
    assert texts(tokenize("中文English文本。上海！好")) == [["中文English文本", "。"], ["上海", "！"], ["好"]]


def test_chars_mode_gives_single_character_sentences():
    text = "北京欢迎你。上海也欢迎你！"
    sentences = tokenize(text, mode="chars")
    assert texts(sentences) == [list("北京欢迎你。"), list("上海也欢迎你！")]
    assert sentences[1][0] == Token("上", 6, 7)


def test_chars_mode_ends_sentences_after_closing_quotes_and_at_newlines():
    text = "他说：“你好！”然后走了。\n第二行 abc\n\n第三段？」好"
    assert texts(tokenize(text, "chars")) == [
        list("他说：“你好！”"),
        list("然后走了。"),
        list("第二行abc"),
        list("第三段？」"),
        ["好"],
    ]


def test_tokenize_pretokenized_offsets_as_if_joined_by_single_spaces():
    tokens = ["EU", "rejects", "German", "call", "."]
    out = tokenize_pretokenized(tokens)
    joined = " ".join(tokens)
    assert [joined[t.char_start : t.char_end] for t in out] == tokens
    assert out[-1] == Token(".", 23, 24) and tokenize_pretokenized([]) == []
    with pytest.raises(SeqtagInputError, match="token 1"):
        tokenize_pretokenized(["a", ""])


def test_bad_arguments_raise_input_errors():
    with pytest.raises(SeqtagInputError, match="mode should be one of 'words', 'chars', got 'bytes'"):
        tokenize("x", mode="bytes")
    with pytest.raises(SeqtagInputError, match="text should be a str"):
        tokenize(["a list"])
    with pytest.raises(SeqtagInputError, match="counts should have one entry per word"):
        mode_for_vocabulary(["a", "b"], [1])


def test_mode_for_vocabulary_tells_characters_from_words():
    english = Counter(
        t.split()[0] for t in (ROOT / "seqtag/examples/quickstart/train.conll").read_text().splitlines() if t.strip()
    )
    assert mode_for_vocabulary(list(english), list(english.values())) == "words"
    assert mode_for_vocabulary(list(english), None) == "words"
    # Characters, with the punctuation and digits every vocabulary has, and a few Latin words kept whole.
    chinese = ["<pad>", "<unk>"] + [chr(c) for c in range(0x4E00, 0x4E64)] + list("。，！？1234") + ["iPhone", "NBA"]
    counts = [0, 0] + [100] * (len(chinese) - 4) + [5, 5]
    assert mode_for_vocabulary(chinese, counts) == "chars"
    assert mode_for_vocabulary(chinese, None) == "chars"
    assert mode_for_vocabulary(chinese, counts[:-2] + [500, 500]) == "words"  # 9% of letter tokens are words
    # Mostly one-character punctuation and digits is not a character model; nor is a vocabulary without letters.
    assert mode_for_vocabulary([".", ",", "1", "2", "the", "said", "a"], [50, 50, 50, 50, 10, 10, 1]) == "words"
    assert mode_for_vocabulary(["<pad>", "<unk>", ".", "1"], None) == "words"
    # Entries kept only for a pretrained vector (count 0) do not vote.
    assert mode_for_vocabulary(["北", "京", "Beijing", "capital"], [9, 9, 0, 0]) == "chars"


def test_agreement_script_glues_punctuation_as_raw_text(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import tokenizer_agreement
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    raw = tokenizer_agreement.raw_text('He said " I do n\'t ( really ) pay $ 5 , " in the U.S .'.split())
    assert raw == 'He said "I don\'t (really) pay $5," in the U.S.'
    conll = tmp_path / "sample.conll"
    conll.write_text("-DOCSTART- O\n\nEU B-ORG\nrejects O\n.  O\n\nOdd O\na)b O\n")
    monkeypatch.setattr(sys, "argv", ["tokenizer_agreement.py", str(conll), "--show", "1"])
    tokenizer_agreement.main()
    out = capsys.readouterr().out
    assert "2 sentences, tokens identical 0.5000 (1)" in out and "'a)b' → 'a ) b'" in out
