"""Raw text → sentences of tokens with character offsets, the way seqtag's training data is tokenized.

``tokenize(text)`` splits paragraphs at blank lines, sentences inside them, and words the way CoNLL-2003 and the
Penn Treebank do (``Tokyo.`` → ``Tokyo`` ``.``, ``don't`` → ``do`` ``n't``, ``U.S.`` stays one token inside a
sentence, ``$12.50`` → ``$`` ``12.50``, quotes and brackets split off, hyphenated words kept whole).
``tokenize(text, mode="chars")`` makes every non-space character a token, for models trained on text written without
spaces (Chinese), and ``mode_for_vocabulary`` picks that mode from a trained vocabulary. ``tokenize_pretokenized``
gives pre-tokenized input the offsets it would have if its tokens were joined by single spaces. Every ``Token``
satisfies ``text[token.char_start:token.char_end] == token.text``, with offsets into the whole input string.

Why a regex tokenizer of our own rather than a library. Measured with ``scripts/tokenizer_agreement.py`` (its
docstring has the command): CoNLL-2003 eng.testb sentences turned back into raw text (punctuation glued as text
writes it) and tokenized, the fraction of the 3,453 whose tokens come back identical; the precision / recall of the
1,223 sentence ends inside UD English EWT test paragraphs (sentences joined by a space); speed on eng.train joined
with spaces (best of 3 on a shared 2-core CPU, so ±30%); import time in a fresh process.

=============================================  =============  =====  ==============  =========
library (version)                              import         CoNLL  EWT ends P / R  tokens/s
=============================================  =============  =====  ==============  =========
nltk 3.10.4 TreebankWordTokenizer (words) [1]  0.2-0.5 s [2]  0.995  –               236 k
nltk NLTKWordTokenizer + syntok sentences      0.2-0.5 s      0.975  –               87 k
nltk Punkt without a trained model [3]         0.2-0.3 s      –      0.940 / 0.792   –
segtok 1.5.11                                  16 ms          0.904  0.959 / 0.764   188-257 k
syntok 1.4.4                                   11 ms          0.766  0.974 / 0.700   4 k [4]
blingfire 0.1.8                                50-200 ms      0.659  0.984 / 0.694   620-710 k
spacy 3.8.18 (blank "en" + sentencizer)        1.3 s          0.701  0.957 / 0.771   260-290 k
pysbd 0.3.4 (sentences only)                   9 ms           –      0.935 / 0.772   15 k
this module                                    13 ms [5]      0.997  0.996 / 0.693   175-310 k
=============================================  =============  =====  ==============  =========

[1] One CoNLL sentence at a time: it splits only the period that ends its input, so it needs a sentence splitter,
which NLTK has only as Punkt. [2] 0.94 s where SciPy is installed (``import nltk`` imports scipy.stats), as in
seqtag's environment. [3] No model can be downloaded at run time; untrained, it splits after ``Mr.`` unless given
an abbreviation list. [4] Its paragraph pass is quadratic in the number of paragraphs (280 k tokens/s on single
sentences). [5] Plus 30 ms at the first call, which builds the pattern.

The others split ``U.S.`` (syntok), leave ``Washington.`` whole inside a text (segtok), or split the hyphenated
words CoNLL keeps (``1996-08-28``, ``AL-AIN``: blingfire, spaCy). NLTK's Treebank rules fit, but cost up to a second
at the first call, still need a sentence splitter and CoNLL fixes (``cannot``, ``US$``, list numbers ``3.``) and
realign their tokens to the text after rewriting quotes. So words are one ``re`` pattern with the Treebank rules and
CoNLL's conventions, whose matches are the offsets, and sentences end at ``. ! ?`` (with the closing quotes and
brackets written after them) followed by a space and a token that does not start lowercase or with a symbol; the
word pattern keeps the period of abbreviations, initials and initialisms, so no sentence ends after ``Mr.`` or
``U.S.`` (inside a paragraph; at its end the period is split off as CoNLL does). Precision is preferred over recall:
a false sentence end inside a name costs a tagger more than a long sentence, and most missed EWT ends start
lowercase (``ok. i will``). On eng.train and eng.testa the tokens agree for 0.996 and 0.999 of the sentences, and
the EWT dev ends score 0.990 / 0.730; the remaining CoNLL differences are the data's own (``Austria)118``, ``...I``,
a final ``U.S.`` kept whole in some sentences and split in others). Only the standard library is imported.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Literal, NamedTuple

from seqtag.errors import SeqtagInputError

__all__ = ["Token", "tokenize", "tokenize_pretokenized", "mode_for_vocabulary", "MODES"]

MODES = ("words", "chars")

# Words whose period belongs to them inside a sentence (a sentence never ends right after one; at the end of a text the
# period is split off, as CoNLL and the Treebank do: "... the U.S." → "U.S" "."). Ambiguous ones (Mass., Wash.,
# Ill., No. before a word) are left out: missing a sentence end costs a tagger less than a false one inside a name.
_ABBREVIATIONS = (
    "Mr Mrs Ms Messrs Dr Prof Rev Gen Col Lt Sgt Capt Cmdr Adm Gov Sen Rep Pres Hon St Mt Ft Jr Sr "
    "Inc Corp Co Cos Ltd Bros Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "v vs etc approx dept est Ave Blvd Calif Fla Ariz Colo Conn Tenn Okla Penn Mich Minn Wis Nev Neb Kan"
).split()
_CLOSERS = frozenset("\"')]}»”’」』）】〕》〉〗")  # may follow a sentence's final punctuation
_OPENERS = frozenset("\"'`([{“‘«¿¡")  # may start a sentence
_WIDE_TERMINATORS = frozenset("。！？")  # end a sentence with no space after them
_TERMINATORS = frozenset(".!?") | _WIDE_TERMINATORS
_CHAR_TERMINATORS = frozenset("!?") | _WIDE_TERMINATORS
_PARAGRAPH_BREAK = re.compile(r"(?:\r\n|\r|\n)(?:[^\S\r\n]*(?:\r\n|\r|\n))+|\u2029")
_LINE_BREAK = re.compile(r"\r\n|[\r\n\u2028\u2029\x0b\x0c\x1c-\x1e\x85]")


class Token(NamedTuple):
    """One token and where it is in the input: ``input[char_start:char_end] == text`` (end exclusive).

    Example:
        >>> tokenize("Hi there.")[0][-1]
        Token(text='.', char_start=8, char_end=9)
    """

    text: str
    char_start: int
    char_end: int


@functools.cache
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    """The word pattern and the character pattern, built at the first call (about 20 ms)."""
    # Python's \w has no combining marks (Devanagari vowel signs, accents written separately, emoji modifiers), so a
    # word would break at each one: collect them (U+E0100-E01EF are the supplementary variation selectors).
    category = unicodedata.category
    marks = {c for c in range(0x20000) if category(chr(c))[0] == "M"} | set(range(0xE0100, 0xE01F0))
    marks |= {0x200C, 0x200D} | set(range(0x1F3FB, 0x1F400))  # zero-width (non-)joiners, emoji skin tones
    ordered = sorted(marks)
    ranges, start = [], ordered[0]
    for prev, cur in zip(ordered, ordered[1:] + [-1]):
        if cur != prev + 1:
            ranges.append(f"{chr(start)}-{chr(prev)}" if prev > start else chr(start))
            start = cur
    mark = "".join(ranges)
    # A word character: marks included, and symbols the Treebank rules do not split off (CoNLL has 10= Year* +44).
    letter = rf"[\w{mark}*=#+^~|]"
    # One character as a reader sees it: with its marks, a flag (two regional indicators), emoji joined by ZWJ.
    char = rf"[\U0001F1E6-\U0001F1FF]{{2}}|\S(?:[{mark}]|(?<=\u200d)\S)*"
    clitic_tail = rf"(?i:s|m|d|ll|re|ve)(?!{letter})"  # what follows the apostrophe in 's 'm 'd 'll 're 've
    abbreviations = "|".join(sorted({a for w in _ABBREVIATIONS for a in (w, w.upper())}, key=len, reverse=True))
    words = "|".join(
        [
            # URL without the punctuation after it; e-mail address (the local part is at most 64 characters by
            # RFC 5321, a bound that keeps the search linear on long runs like "a+a+a+...").
            r"(?:https?://|www\.)(?:[^\s\"'<>()\[\]]*[^\s\"'<>()\[\].,;:!?])?",
            r"\w[\w.+-]{0,63}@\w[\w-]*(?:\.\w[\w-]*)+",
            r"[A-Z]{1,3}\$(?=[\d\s]|$)",  # US$ C$ HK$ (CoNLL keeps them whole; a bare $ is a token of its own)
            rf"(?:[^\W\d_]\.){{2,}}(?:-{letter}+)*(?!{letter}|\d)",  # initialisms U.S. a.m. U.S.-led, period kept
            r"[A-Z]\.(?=\s)",  # an initial: J. Smith
            rf"(?:{abbreviations})\.(?!{letter})",  # Mr. Inc. Jan. vs.
            r"No\.(?=\s*\d)",  # No. 1
            r"(?<![\w.])\.\d+",  # .389
            r"(?<![\w:;=])[:;=][-^']?[)(\]\[DPp3|/\\*](?!\w)|<3",  # emoticons :) ;-) :D =( <3
            rf"{letter}+?(?=(?i:n['’]t)(?!{letter}))",  # do|n't, ca|n't, wo|n't (Treebank)
            rf"(?i:n['’]t|['’]{clitic_tail})",  # the clitic itself: n't 's 're ...
            # A word: runs of word characters joined by hyphens, periods, slashes, ampersands, apostrophes that do
            # not start a clitic (O'Brien, rock'n'roll) and, between digits, commas and colons (3,000 1:46.26).
            # A trailing hyphen or slash before a space (pre- and post-war) stays, and so does the period of a final
            # initial (Russian-U.S.).
            rf"{letter}+(?:(?:[-./&]|['’](?!{clitic_tail})|(?<=\d)[,:](?=\d)){letter}+)*"
            rf"(?:[-/](?=\s)|(?<=[-.][^\W\d_])\.(?!{letter}))?",
            r"\.{2,}|…",  # ellipsis
            r"-{2,}",  # -- as a dash
            r"``|''",  # Treebank quotes, when the text has them
            char,  # anything else, one character at a time
        ]
    )
    return re.compile(words), re.compile(char)


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph: the text between blank lines."""
    spans, start = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def _split_final_period(sentence: list[Token]) -> list[Token]:
    """Split the period off an abbreviation that ends a sentence ("the U.S." → "U.S" "."), as CoNLL and PTB do."""
    i = len(sentence) - 1
    while i > 0 and sentence[i].text in _CLOSERS:
        i -= 1
    last = sentence[i]
    if len(last.text) > 1 and last.text.endswith(".") and not last.text.endswith(".."):
        end = last.char_end - 1
        sentence[i : i + 1] = [Token(last.text[:-1], last.char_start, end), Token(".", end, last.char_end)]
    return sentence


def _starts_sentence(word: str) -> bool:
    """Whether a token after . ! or ? (and a space) may start a sentence: not lowercase, not a symbol or emoticon."""
    first = word[0]
    return first.isalnum() and not first.islower() or first in _OPENERS


def _word_sentences(text: str, start: int, end: int) -> list[list[Token]]:
    """The sentences of one paragraph ``text[start:end]``, words tokenized."""
    words, _ = _patterns()
    tokens = [Token(m.group(), m.start(), m.end()) for m in words.finditer(text, start, end)]
    sentences, begin, quotes, i = [], 0, 0, 0
    while i < len(tokens):
        tok = tokens[i]
        quotes += tok.text == '"'
        i += 1
        if tok.text not in _TERMINATORS:
            continue
        first = tokens[begin]
        if tok.text == "." and i - begin == 2 and first.text.isdigit() and first.char_end == tok.char_start:
            # "12. Jan Ullrich ..." (a list number, kept whole as CoNLL has it), not a sentence "12."
            if i < len(tokens):
                tokens[begin : begin + 2] = [
                    Token(text[first.char_start : tok.char_end], first.char_start, tok.char_end)
                ]
                i -= 1
            continue
        # Further ! ? . and closing quotes or brackets written right after the terminator belong to this sentence;
        # a straight double quote closes only when one is open.
        while i < len(tokens) and tokens[i].char_start == tokens[i - 1].char_end:
            nxt = tokens[i].text
            if nxt == '"' and quotes % 2 == 1:
                quotes += 1
            elif nxt not in _TERMINATORS and (nxt not in _CLOSERS or nxt == '"'):
                break
            i += 1
        if i < len(tokens) and not (
            tok.text in _WIDE_TERMINATORS
            or tokens[i].char_start > tokens[i - 1].char_end
            and _starts_sentence(tokens[i].text)
        ):
            continue  # "world.Next", "Yahoo! is", "Great! :)": not a sentence end
        sentences.append(tokens[begin:i])
        begin = i
    if begin < len(tokens):
        if sentences and all(t.text in _CLOSERS or t.text in _TERMINATORS for t in tokens[begin:]):
            begin -= len(sentences.pop())  # '... the end. "' (a quote closing one opened paragraphs before)
        sentences.append(tokens[begin:])
    return [_split_final_period(s) for s in sentences]


def _char_sentences(text: str, start: int, end: int) -> list[list[Token]]:
    """The sentences of one paragraph, a token per character; they end after 。！？!? (and closers) and at newlines."""
    _, chars = _patterns()
    sentences: list[list[Token]] = []
    current: list[Token] = []
    ended = False  # the last token was a terminator (or a closer after one)
    for m in chars.finditer(text, start, end):
        ch = m.group()
        gap = text[current[-1].char_end : m.start()] if current else ""
        if current and (_LINE_BREAK.search(gap) or (ended and ch not in _CHAR_TERMINATORS and ch not in _CLOSERS)):
            sentences.append(current)
            current = []
        current.append(Token(ch, m.start(), m.end()))
        ended = ch in _CHAR_TERMINATORS or (ended and ch in _CLOSERS)
    if current:
        sentences.append(current)
    return sentences


def tokenize(text: str, mode: Literal["words", "chars"] = "words") -> list[list[Token]]:
    """Split raw text into sentences of tokens with character offsets into ``text``.

    Blank lines always end a sentence. A single newline ends one in ``"chars"`` mode only; in ``"words"`` mode it is
    a space, so text wrapped at a fixed width keeps its sentences whole (for a file of one sentence per line, call
    this per line and add the line's offset). Sentences also end after ``。！？`` in ``"words"`` mode.

    Args:
        text: the raw text.
        mode: ``"words"`` splits words the CoNLL-2003 / Penn Treebank way; ``"chars"`` makes each non-space character
            (with its combining marks) a token, for languages written without spaces. Default: ``"words"``

    Returns:
        The sentences, each a non-empty list of ``Token``; ``[]`` for empty or whitespace-only text.

    Raises:
        SeqtagInputError: ``text`` is not a string, or ``mode`` is not one of ``MODES``.

    Example:
        >>> [[t.text for t in s] for s in tokenize("Mr. Smith didn't pay $12.50 in Tokyo. He left!")]
        [['Mr.', 'Smith', 'did', "n't", 'pay', '$', '12.50', 'in', 'Tokyo', '.'], ['He', 'left', '!']]
        >>> [[t.text for t in s] for s in tokenize("北京欢迎你。上海！", mode="chars")]
        [['北', '京', '欢', '迎', '你', '。'], ['上', '海', '！']]
    """
    if not isinstance(text, str):
        raise SeqtagInputError(f"text should be a str, got {type(text).__name__}")
    if mode not in MODES:
        raise SeqtagInputError(f"mode should be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    split = _word_sentences if mode == "words" else _char_sentences
    return [sentence for start, end in _paragraphs(text) for sentence in split(text, start, end)]


def tokenize_pretokenized(tokens: Sequence[str]) -> list[Token]:
    """Offsets for tokens given already split, as if they were joined by single spaces.

    Example:
        >>> tokenize_pretokenized(["EU", "rejects", "it"])[1:]
        [Token(text='rejects', char_start=3, char_end=10), Token(text='it', char_start=11, char_end=13)]

    Raises:
        SeqtagInputError: a token is not a string or is empty.
    """
    out, start = [], 0
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok:
            raise SeqtagInputError(f"token {i} should be a non-empty str, got {tok!r}")
        out.append(Token(tok, start, start + len(tok)))
        start += len(tok) + 1
    return out


def _is_punct_or_digit(word: str) -> bool:
    """True for tokens with no letter at all: punctuation, digits, symbols (both kinds of vocabulary have them)."""
    return not any(c.isalpha() for c in word)


def mode_for_vocabulary(words: Sequence[str], counts: Sequence[int] | None = None, threshold: float = 0.95) -> str:
    """The tokenization a model was trained on, read from its word vocabulary: ``"chars"`` or ``"words"``.

    The rule: among the training token occurrences that contain a letter (weighted by ``counts``; each vocabulary
    entry once when ``counts`` is None; ``<pad>``-like special entries skipped), ``"chars"`` when at least
    ``threshold`` of them are one character long, else ``"words"``. Tokens without letters (punctuation, digits,
    symbols) are left out because both kinds of data are full of one-character ones: about a quarter of CoNLL-2003's
    English tokens are ``. , ( ) "`` or digits, while its letter tokens are one character long 3% of the time (``a``,
    ``I``, initials); character-level Chinese data is 100% one character. A vocabulary with no letters at all (or
    all counts zero) gives ``"words"``, the tokenizer that keeps numbers whole.

    Args:
        words: the vocabulary entries (``Vocab.words``).
        counts: the training count of each entry (``Vocab.word_counts``; zero for entries added only for a
            pretrained vector, which then do not vote), or None.
        threshold: the share of one-character letter tokens from which the mode is ``"chars"``. Default: 0.95

    Raises:
        SeqtagInputError: ``counts`` does not have one entry per word.

    Example:
        >>> mode_for_vocabulary(["<pad>", "<unk>", "北", "京", "。", "2"]), mode_for_vocabulary(["the", "a", "U.S."])
        ('chars', 'words')
    """
    if counts is not None and len(counts) != len(words):
        raise SeqtagInputError(f"counts should have one entry per word ({len(words)}), got {len(counts)}")
    single = total = 0
    for i, word in enumerate(words):
        if (word.startswith("<") and word.endswith(">") and len(word) > 2) or _is_punct_or_digit(word):
            continue
        n = 1 if counts is None else counts[i]
        total += n
        single += n * (len(word) == 1)
    return "chars" if total and single >= threshold * total else "words"
