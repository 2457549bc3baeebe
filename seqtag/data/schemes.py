"""Tag schemes as data: parsing, detection, validation, span extraction, conversion and CRF constraints.

This is the only file in seqtag that looks at tag prefixes such as ``B-``. A span tag is written ``PREFIX-TYPE``
(split on the first ``-``, so the type may contain ``-``); ``O`` is outside any span. The schemes are:

- ``IOB1`` (CoNLL-2003): spans are ``I-``; ``B-`` only marks a span that directly follows a span of the same type.
- ``IOB2`` (alias ``BIO``, CoNLL-2000): ``B-`` starts every span, ``I-`` continues it.
- ``BIOES`` (aliases ``BIOUL``, ``IOBES``, ``BILOU``): ``B-``, ``I-``, ``E-`` for longer spans, ``S-`` for single
  tokens; ``L-`` and ``U-`` are read as ``E-`` and ``S-``.
- ``BMES`` (Chinese word segmentation style): ``B-``, ``M-``, ``E-``, ``S-``; ``M-`` is read as ``I-``.

Spans are ``(type, start, end)`` with ``end`` exclusive. ``get_spans`` follows the chunk rules of the CoNLL
``conlleval`` script as extended to ``E-``/``S-`` by its Python ports (conlleval.py, seqeval's default mode).
``allowed_transitions`` follows AllenNLP's ``allowed_transitions``: (from_id, to_id) pairs where
START = ``len(labels)`` and END = ``len(labels) + 1``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from seqtag.errors import SeqtagInputError

SCHEMES = ("IOB1", "IOB2", "BIOES", "BMES")

_ALIASES = {"BIO": "IOB2", "BIOUL": "BIOES", "IOBES": "BIOES", "BILOU": "BIOES"}

# Prefixes a valid tag of each scheme may carry, in the order ``labels_for_scheme`` lists them.
_PREFIXES = {
    "IOB1": ("B", "I"),
    "IOB2": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
    "BMES": ("B", "M", "E", "S"),
}
# Prefixes accepted as spellings of the canonical ones (BIOUL's L and U; BMES's M is the inside tag I).
_PREFIX_ALIASES = {"IOB1": {}, "IOB2": {}, "BIOES": {"L": "E", "U": "S"}, "BMES": {"M": "I"}}
_EXTRA_VALID = {"BIOES": ("L", "U")}

_SPAN_PREFIXES = frozenset("BIESMLU")


def normalize_scheme(name: str) -> str:
    """Return the canonical name of a tag scheme.

    Args:
        name: a scheme name in any case: ``IOB1``, ``IOB2``, ``BIOES``, ``BMES`` or an alias
            (``BIO`` → ``IOB2``; ``BIOUL``, ``IOBES``, ``BILOU`` → ``BIOES``).

    Returns:
        One of ``SCHEMES``.

    Raises:
        SeqtagInputError: for an unknown name, or ``IOB``, which could mean IOB1 or IOB2.

    Example:
        >>> normalize_scheme("bio")
        'IOB2'
    """
    key = str(name).strip().upper()
    if key in SCHEMES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    valid = ", ".join([*SCHEMES, *_ALIASES])
    if key == "IOB":
        raise SeqtagInputError(f"scheme 'IOB' is ambiguous: use 'IOB1' (CoNLL-2003) or 'IOB2' (BIO); valid: {valid}")
    raise SeqtagInputError(f"scheme should be one of {valid}, got {name!r}")


def split_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into its prefix and type on the first ``-``.

    Args:
        tag: a tag such as ``B-PER``, ``I-B-ORG`` or ``O``.

    Returns:
        ``(prefix, type)``; ``type`` is None when the tag has no ``-`` (``O``, or a non-span label like ``NOUN``).

    Example:
        >>> split_tag("B-PER"), split_tag("I-ART-WORK"), split_tag("O")
        (('B', 'PER'), ('I', 'ART-WORK'), ('O', None))
    """
    prefix, dash, type_ = tag.partition("-")
    return (prefix, type_) if dash else (tag, None)


def _is_span_label(label: str) -> bool:
    if label == "O":
        return True
    prefix, type_ = split_tag(label)
    return prefix in _SPAN_PREFIXES and bool(type_)


def is_span_labels(labels: Iterable[str]) -> bool:
    """Tell whether labels are span tags (NER, chunking) rather than token labels (POS).

    Args:
        labels: label strings.

    Returns:
        True when there is at least one label and every label is ``O`` or ``PREFIX-TYPE`` with an upper-case
        prefix in B, I, E, S, M, L, U and a non-empty type. ``NOUN``, ``NN``, ``-LRB-`` or ``B-`` give False.

    Example:
        >>> is_span_labels(["O", "B-PER", "I-PER"]), is_span_labels(["NOUN", "-LRB-"])
        (True, False)
    """
    seen = False
    for label in labels:
        if not _is_span_label(label):
            return False
        seen = True
    return seen


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str | None:
    """Guess the scheme of gold tag sequences.

    Rules, first match wins:
    not span labels (see ``is_span_labels``) → None; any ``M-`` → BMES; any ``E-``, ``S-``, ``L-`` or ``U-`` →
    BIOES; some span starts with ``I-`` (``I-X`` at sentence start, after ``O`` or after a tag of another type)
    → IOB1; otherwise IOB2 (also when every tag is ``O``).

    Args:
        tag_sequences: one sequence of tag strings per sentence.

    Returns:
        One of ``SCHEMES``, or None.

    Example:
        >>> detect_scheme([["I-PER", "I-PER", "O"]]), detect_scheme([["B-NP", "I-NP"]]), detect_scheme([["NN"]])
        ('IOB1', 'IOB2', None)
    """
    sequences = [list(tags) for tags in tag_sequences]
    if not is_span_labels(tag for tags in sequences for tag in tags):
        return None
    prefixes = {split_tag(tag)[0] for tags in sequences for tag in tags}
    if "M" in prefixes:
        return "BMES"
    if prefixes & {"E", "S", "L", "U"}:
        return "BIOES"
    for tags in sequences:
        previous = "O"
        for tag in tags:
            prefix, type_ = split_tag(tag)
            if prefix == "I" and split_tag(previous)[1] != type_:
                return "IOB1"
            previous = tag
    return "IOB2"


def _first_invalid(tags: Iterable[str], scheme: str) -> tuple[int, str, str] | None:
    """(position, tag, message without the position) of the first tag that is not a tag of ``scheme``."""
    allowed = (*_PREFIXES[scheme], *_EXTRA_VALID.get(scheme, ()))
    for position, tag in enumerate(tags):
        prefix, type_ = split_tag(tag)
        if tag != "O" and not (prefix in allowed and type_):
            expected = ", ".join(f"{p}-TYPE" for p in allowed)
            return position, tag, f"is not a valid {scheme} tag (expected O or {expected})"
    return None


def validate_tags(tags: Iterable[str], scheme: str) -> str | None:
    """Find the first tag that is not a tag of the scheme.

    Only single tags are checked (prefix allowed by the scheme, non-empty type); sequence-level oddities such as
    ``I-X`` after ``O`` in IOB2 are not rejected here.

    Args:
        tags: tag strings.
        scheme: a scheme name (see ``normalize_scheme``).

    Returns:
        A message naming the first bad tag and its position, or None when all tags are valid.

    Example:
        >>> validate_tags(["B-PER", "E-PER"], "IOB2")
        "tag 'E-PER' at position 1 is not a valid IOB2 tag (expected O or B-TYPE, I-TYPE)"
    """
    found = _first_invalid(tags, normalize_scheme(scheme))
    if found is None:
        return None
    position, tag, problem = found
    return f"tag {tag!r} at position {position} {problem}"


def _looks_like_span(label: str) -> bool:
    """``PREFIX-TYPE`` with a span prefix in either case: ``b-per`` is a misspelt span tag, not a class."""
    prefix, type_ = split_tag(label)
    return prefix.upper() in _SPAN_PREFIXES and bool(type_)


def is_span_like(tag_sequences: Iterable[Sequence[str]]) -> bool:
    """Tell whether tags are meant as span tags, even when some of them are not valid ones.

    Tags are span-like when some tag other than ``O`` looks like ``PREFIX-TYPE`` (a prefix among B, I, E, S, M, L,
    U in either case, and a type) and such tags make at least half of the distinct tags other than ``O``, or at
    least half of their occurrences. A stray ``X-PER`` or ``PER`` among ``B-``/``I-`` tags keeps data span-like;
    part-of-speech tags (``NN``, ``PRP$``, ``-LRB-``, ``X``, ``NOUN``) are not: none of them has a span prefix.

    Example:
        >>> is_span_like([["B-PER", "X-PER", "O"]]), is_span_like([["PRP$", "-LRB-", "X", "NN"]])
        (True, False)
    """
    counts: Counter[str] = Counter(tag for tags in tag_sequences for tag in tags)
    counts.pop("O", None)
    spans = {tag: count for tag, count in counts.items() if _looks_like_span(tag)}
    if not spans:
        return False
    return 2 * len(spans) >= len(counts) or 2 * sum(spans.values()) >= sum(counts.values())


def find_bad_tag(tag_sequences: Sequence[Sequence[str]], scheme: str | None) -> tuple[int, int, str] | None:
    """Find the first tag that does not fit the data's scheme, to report it with its file and line.

    With a scheme, that is the first tag that is not one of its tags (see ``validate_tags``). Without one (the
    scheme detected as None, because not every tag is a span tag), data that is still span-like (see
    ``is_span_like``) is span data with a stray tag, and its first tag that is neither ``O`` nor a span tag is
    returned: learning such data as plain classes would silently score accuracy instead of span F1. Plain classes
    (POS tags) give None.

    Args:
        tag_sequences: one sequence of tag strings per sentence.
        scheme: a scheme name (see ``normalize_scheme``), or None for data detected as plain classes.

    Returns:
        ``(sentence, position, message)`` with both indices from 0 and a message naming the tag, or None.

    Example:
        >>> find_bad_tag([["B-PER", "O"], ["X-PER", "I-PER"]], None)[:2]
        (1, 0)
        >>> find_bad_tag([["B-PER", "E-PER"]], "BIO")
        (0, 1, "tag 'E-PER' is not a valid IOB2 tag (expected O or B-TYPE, I-TYPE)")
        >>> find_bad_tag([["PRP$", "-LRB-", "X"]], None) is None
        True
    """
    if scheme is not None:
        scheme = normalize_scheme(scheme)
        for sentence, tags in enumerate(tag_sequences):
            found = _first_invalid(tags, scheme)
            if found is not None:
                position, tag, problem = found
                return sentence, position, f"tag {tag!r} {problem}"
        return None
    if not is_span_like(tag_sequences):
        return None
    for sentence, tags in enumerate(tag_sequences):
        for position, tag in enumerate(tags):
            if not _is_span_label(tag):
                problem = (
                    f"tag {tag!r} is not a span tag (O, or PREFIX-TYPE with PREFIX one of B, I, E, S, M, L, U) "
                    f"though most tags are: fix it, or set data.tag_scheme=none if the tags are plain classes"
                )
                return sentence, position, problem
    return None


def _canonical(tag: str, scheme: str) -> tuple[str, str]:
    """Prefix (aliases resolved) and type (``""`` when absent, as conlleval does) of a tag."""
    prefix, type_ = split_tag(tag)
    return _PREFIX_ALIASES[scheme].get(prefix, prefix), type_ or ""


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    # E- and S- close their span: the next token never continues it.
    if prev_tag in ("E", "S"):
        return True
    # B-/I- followed by a tag that starts a span (B-, S-) or by O.
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    # A change of type ends any span.
    return prev_tag != "O" and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    # B- and S- always start a span.
    if tag in ("B", "S"):
        return True
    # I- or E- start a span when nothing open precedes them: after O, E- or S- (so I-X after O starts a span).
    if prev_tag in ("O", "E", "S") and tag in ("I", "E"):
        return True
    # A change of type starts a span at any non-O tag.
    return tag != "O" and prev_type != type_


def get_spans(tags: Sequence[str], scheme: str) -> list[tuple[str, int, int]]:
    """Extract the spans of a tag sequence with the conlleval chunk rules; works on any input.

    Tags are split as conlleval splits them (prefix before the first ``-``, type after it, ``""`` without ``-``).
    In BMES ``M`` is read as ``I``; in BIOES ``L`` as ``E`` and ``U`` as ``S``. Between tokens ``i-1`` and ``i``
    (the sentence ends with an implicit ``O``):

    A span ends when
        - the previous tag is ``E`` or ``S``;
        - the previous tag is ``B`` or ``I`` and the tag is ``B``, ``S`` or ``O``;
        - the previous tag is not ``O`` and the type changes (so ``B-X I-Y`` is two spans).

    A span starts when
        - the tag is ``B`` or ``S`` (so ``I-X B-X`` is two spans, as IOB1 writes them);
        - the tag is ``I`` or ``E`` and the previous tag is ``O``, ``E`` or ``S`` (``O I-X`` starts a span);
        - the tag is not ``O`` and the type changes.

    These are conlleval.pl's ``endOfChunk``/``startOfChunk`` for B, I and O; for E and S they are the rules of
    its Python ports (conlleval.py, seqeval), where E and S always close a span. Any other prefix (e.g. ``X-PER``)
    only takes part through the type-change rules. If a span starts while another is still open (possible only
    with such unknown prefixes), the open one is closed before the new one, so every start makes one span, as
    conlleval counts them.

    Args:
        tags: tag strings of one sentence.
        scheme: a scheme name (see ``normalize_scheme``).

    Returns:
        ``(type, start, end)`` triples in order, ``end`` exclusive.

    Example:
        >>> get_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"], "IOB1")
        [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5)]
    """
    scheme = normalize_scheme(scheme)
    spans: list[tuple[str, int, int]] = []
    prev_tag, prev_type = "O", ""
    start, start_type = None, ""  # the open span, if any
    for i, tag in enumerate([*tags, "O"]):
        prefix, type_ = _canonical(tag, scheme)
        ends = _end_of_chunk(prev_tag, prefix, prev_type, type_)
        starts = _start_of_chunk(prev_tag, prefix, prev_type, type_)
        if start is not None and (ends or starts):
            spans.append((start_type, start, i))
            start = None
        if starts:
            start, start_type = i, type_
        prev_tag, prev_type = prefix, type_
    return spans


def _span_tags(type_: str, length: int, follows_same_type: bool, scheme: str) -> list[str]:
    """Tags of one span of ``length`` tokens in ``scheme``."""
    if scheme == "IOB1":
        return [f"B-{type_}" if follows_same_type else f"I-{type_}"] + [f"I-{type_}"] * (length - 1)
    if scheme == "IOB2":
        return [f"B-{type_}"] + [f"I-{type_}"] * (length - 1)
    if length == 1:
        return [f"S-{type_}"]
    inside = "M" if scheme == "BMES" else "I"
    return [f"B-{type_}"] + [f"{inside}-{type_}"] * (length - 2) + [f"E-{type_}"]


def spans_to_tags(spans: Iterable[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Render spans as the tags of one sentence.

    IOB1 writes ``I-`` except ``B-`` on the first token of a span that directly follows a span of the same type;
    IOB2 writes ``B-`` then ``I-``; BIOES writes ``S-`` for one token, else ``B-``, ``I-``..., ``E-``; BMES the same
    with ``M-`` for ``I-``.

    Args:
        spans: ``(type, start, end)`` triples, ``end`` exclusive, not overlapping.
        length: number of tokens in the sentence.
        scheme: a scheme name (see ``normalize_scheme``).

    Returns:
        ``length`` tag strings.

    Raises:
        SeqtagInputError: for an empty, out-of-range or overlapping span.

    Example:
        >>> spans_to_tags([("PER", 0, 2), ("PER", 2, 3)], 4, "IOB1")
        ['I-PER', 'I-PER', 'B-PER', 'O']
    """
    scheme = normalize_scheme(scheme)
    tags = ["O"] * length
    previous_end, previous_type = -1, None
    for type_, start, end in sorted(spans, key=lambda span: (span[1], span[2])):
        if not 0 <= start < end <= length or start < previous_end:
            raise SeqtagInputError(
                f"span ({type_!r}, {start}, {end}) should lie in [0, {length}) and not overlap the one before"
            )
        follows_same_type = start == previous_end and type_ == previous_type
        tags[start:end] = _span_tags(type_, end - start, follows_same_type, scheme)
        previous_end, previous_type = end, type_
    return tags


def convert(tags: Sequence[str], src: str, dst: str) -> list[str]:
    """Rewrite one sentence's tags from scheme ``src`` to scheme ``dst`` (through its spans).

    Example:
        >>> convert(["B-PER", "I-PER", "B-LOC"], "IOB2", "BIOES")
        ['B-PER', 'E-PER', 'S-LOC']
    """
    return spans_to_tags(get_spans(tags, src), len(tags), dst)


def labels_for_scheme(types: Iterable[str], scheme: str) -> list[str]:
    """All labels of a scheme for the given span types, in a fixed order.

    Args:
        types: span types such as ``PER``; duplicates are ignored.
        scheme: a scheme name (see ``normalize_scheme``).

    Returns:
        ``O``, then for each type in sorted order its tags with the prefixes B, I (IOB1, IOB2), B, I, E, S (BIOES)
        or B, M, E, S (BMES).

    Raises:
        SeqtagInputError: for an empty type.

    Example:
        >>> labels_for_scheme(["PER", "LOC"], "BIO")
        ['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']
    """
    scheme = normalize_scheme(scheme)
    unique = sorted(set(types))
    if "" in unique:
        raise SeqtagInputError(f"span types should be non-empty strings, got {unique!r}")
    return ["O"] + [f"{prefix}-{type_}" for type_ in unique for prefix in _PREFIXES[scheme]]


# Transition predicates. ``prev``/``tag`` are canonical prefixes ("START", "END", "O", "B", "I", "E", "S") and
# ``same`` says whether both tags carry the same type. START and END have no type.


def _iob1_allowed(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if tag == "END":
        return True  # any tag may end a sentence
    if tag in ("O", "I"):
        return True  # O and I-x may follow anything (I-x after O, START or another type starts a span)
    return prev in ("B", "I") and prev_type == tag_type  # B-x only right after a span of the same type


def _iob2_allowed(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if tag == "END":
        return True  # any tag may end a sentence
    if tag in ("O", "B"):
        return True  # O and B-x may follow anything
    return prev in ("B", "I") and prev_type == tag_type  # I-x only after B-x or I-x


def _bioes_allowed(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if prev in ("B", "I"):
        return tag in ("I", "E") and prev_type == tag_type  # B-x and I-x go on only to I-x or E-x
    # After START, O, E- or S- no span is open:
    return tag in ("O", "B", "S", "END")  # a span may start with B- or S-, and the sentence may end


_PREDICATES: dict[str, Callable[[str, str, str, str], bool]] = {
    "IOB1": _iob1_allowed,
    "IOB2": _iob2_allowed,
    "BIOES": _bioes_allowed,
    "BMES": _bioes_allowed,  # with M read as I
}


def allowed_transitions(labels: Sequence[str], scheme: str | None) -> list[tuple[int, int]]:
    """List the label transitions that the scheme allows, for a CRF's constraint mask.

    START = ``len(labels)`` may only be a source and END = ``len(labels) + 1`` only a target; START → END is never
    allowed (sentences are not empty). With ``scheme=None`` (labels that are not spans, e.g. POS tags) every
    other transition is allowed.

    Args:
        labels: label strings; index ``i`` is label id ``i``.
        scheme: a scheme name (see ``normalize_scheme``) or None.

    Returns:
        Sorted ``(from_id, to_id)`` pairs.

    Raises:
        SeqtagInputError: when a label is not a tag of the scheme.

    Example:
        >>> allowed_transitions(["O", "B-PER", "I-PER"], "IOB2")  # START = 3, END = 4
        [(0, 0), (0, 1), (0, 4), (1, 0), (1, 1), (1, 2), (1, 4), (2, 0), (2, 1), (2, 2), (2, 4), (3, 0), (3, 1)]
    """
    start, end = len(labels), len(labels) + 1
    if scheme is None:
        return [
            (i, j) for i in [*range(len(labels)), start] for j in [*range(len(labels)), end] if (i, j) != (start, end)
        ]
    scheme = normalize_scheme(scheme)
    problem = validate_tags(labels, scheme)
    if problem is not None:
        raise SeqtagInputError(f"labels do not fit scheme {scheme}: {problem}")
    parsed = [(i, *_canonical(label, scheme)) for i, label in enumerate(labels)]
    allowed = _PREDICATES[scheme]
    return [
        (i, j)
        for i, prev, prev_type in [*parsed, (start, "START", "")]
        for j, tag, tag_type in [*parsed, (end, "END", "")]
        if (i, j) != (start, end) and allowed(prev, prev_type, tag, tag_type)
    ]
