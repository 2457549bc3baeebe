"""Tests for seqtag.data.schemes: names, detection, validation, conlleval span rules, conversion, transitions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.data.schemes import (
    SCHEMES,
    allowed_transitions,
    convert,
    detect_scheme,
    get_spans,
    is_span_labels,
    labels_for_scheme,
    normalize_scheme,
    spans_to_tags,
    split_tag,
    validate_tags,
)
from seqtag.errors import SeqtagInputError

TYPES = ["PER", "LOC", "ART-WORK"]


@st.composite
def span_lists(draw: st.DrawFn) -> tuple[list[tuple[str, int, int]], int]:
    """Random non-overlapping spans, often adjacent and of the same type, and the sentence length."""
    spans, position = [], 0
    for _ in range(draw(st.integers(0, 6))):
        position += draw(st.integers(0, 2))
        length = draw(st.integers(1, 4))
        spans.append((draw(st.sampled_from(TYPES)), position, position + length))
        position += length
    return spans, position + draw(st.integers(0, 2)) or 1


# --- names, splitting, detection, validation ---


@pytest.mark.parametrize(
    ("name", "expected"),
    [("iob1", "IOB1"), ("BIO", "IOB2"), ("Iob2", "IOB2"), ("bioul", "BIOES"), ("IOBES", "BIOES"), ("BILOU", "BIOES")],
)
def test_normalize_scheme(name: str, expected: str) -> None:
    assert normalize_scheme(name) == expected


@pytest.mark.parametrize("name", ["IOB", "xyz", ""])
def test_normalize_scheme_rejects_with_valid_names(name: str) -> None:
    with pytest.raises(SeqtagInputError, match="IOB1.*IOB2.*BIOES.*BMES"):
        normalize_scheme(name)


def test_split_tag() -> None:
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("I-ART-WORK") == ("I", "ART-WORK")
    assert split_tag("O") == ("O", None)
    assert split_tag("NOUN") == ("NOUN", None)


def test_is_span_labels() -> None:
    assert is_span_labels(["O", "B-PER", "I-PER", "E-LOC", "S-LOC", "M-W", "L-X", "U-X"])
    assert is_span_labels(["O"])
    for pos in (["NOUN", "VERB"], ["NN", "-LRB-"], ["O", "B-"], ["O", "b-PER"], ["O", "X-PER"], []):
        assert not is_span_labels(pos), pos


@pytest.mark.parametrize(
    ("sequences", "expected"),
    [
        ([["I-PER", "I-PER", "O", "B-LOC"]], "IOB1"),  # CoNLL-2003 style: spans start with I-
        ([["B-PER", "I-PER", "O"], ["O", "I-LOC"]], "IOB1"),  # one I- start is enough
        ([["B-PER", "I-PER", "I-LOC"]], "IOB1"),  # I- after another type starts a span
        ([["B-NP", "I-NP", "B-VP", "O", "B-NP"]], "IOB2"),  # CoNLL-2000 style
        ([["O", "O"]], "IOB2"),
        ([["B-PER", "E-PER", "S-LOC", "O"]], "BIOES"),
        ([["B-PER", "L-PER", "U-LOC"]], "BIOES"),
        ([["B-W", "M-W", "E-W", "S-W"]], "BMES"),
        ([["NOUN", "VERB", "O"]], None),
        ([["NN", "-LRB-"]], None),
    ],
)
def test_detect_scheme(sequences: list[list[str]], expected: str | None) -> None:
    assert detect_scheme(sequences) == expected


def test_validate_tags() -> None:
    assert validate_tags(["O", "B-PER", "I-PER"], "IOB2") is None
    assert validate_tags(["I-PER", "O", "I-LOC"], "bio") is None  # sequence-level oddities are not checked here
    assert "'E-PER' at position 1" in validate_tags(["B-PER", "E-PER"], "IOB2")
    assert "'X-PER'" in validate_tags(["X-PER"], "BIOES")
    assert "'B-'" in validate_tags(["B-"], "IOB1")
    assert "'I-W'" in validate_tags(["B-W", "I-W"], "BMES")
    assert validate_tags(["B-W", "M-W", "E-W", "S-W"], "BMES") is None
    assert validate_tags(["B-X", "L-X", "U-X"], "BIOES") is None


# --- conlleval span rules, one case per rule ---


@pytest.mark.parametrize(
    ("tags", "scheme", "spans"),
    [
        (["O", "I-PER", "I-PER"], "IOB1", [("PER", 1, 3)]),  # I-X after O starts a span
        (["I-PER"], "IOB2", [("PER", 0, 1)]),  # I-X at sentence start starts a span
        (["B-LOC", "I-PER"], "IOB2", [("LOC", 0, 1), ("PER", 1, 2)]),  # I-X after B-Y starts a new span
        (["I-PER", "B-PER", "I-PER"], "IOB1", [("PER", 0, 1), ("PER", 1, 3)]),  # B-X after I-X starts a new span
        (["B-PER", "B-PER"], "IOB2", [("PER", 0, 1), ("PER", 1, 2)]),  # B-X after B-X
        (["I-PER", "I-LOC"], "IOB1", [("PER", 0, 1), ("LOC", 1, 2)]),  # type change ends a span
        (["O", "B-PER", "I-PER"], "IOB2", [("PER", 1, 3)]),  # span at sentence end
        (["B-PER", "E-PER", "I-PER"], "BIOES", [("PER", 0, 2), ("PER", 2, 3)]),  # E- ends a span
        (["S-PER", "E-PER"], "BIOES", [("PER", 0, 1), ("PER", 1, 2)]),  # S- ends a span, E- after S- starts
        (["B-PER", "S-PER"], "BIOES", [("PER", 0, 1), ("PER", 1, 2)]),  # S- after B- starts a new span
        (["E-PER", "E-PER"], "BIOES", [("PER", 0, 1), ("PER", 1, 2)]),  # E- after E- starts a new span
        (["B-PER", "I-PER", "O"], "BIOES", [("PER", 0, 2)]),  # O ends an unfinished span
        (["B-PER", "L-PER", "U-LOC"], "BIOES", [("PER", 0, 2), ("LOC", 2, 3)]),  # L = E, U = S
        (["B-W", "M-W", "E-W", "M-W"], "BMES", [("W", 0, 3), ("W", 3, 4)]),  # M = I
        (["B-ART-WORK", "I-ART-WORK"], "IOB2", [("ART-WORK", 0, 2)]),  # types may contain '-'
        ([], "IOB2", []),
        (["O", "NOUN"], "IOB2", []),  # a label without a type is not a span
    ],
)
def test_get_spans_conlleval_rules(tags: list[str], scheme: str, spans: list[tuple[str, int, int]]) -> None:
    assert get_spans(tags, scheme) == spans


def test_spans_to_tags_each_scheme() -> None:
    spans = [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 7)]
    assert spans_to_tags(spans, 8, "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-LOC", "I-LOC", "O"]
    assert spans_to_tags(spans, 8, "IOB2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    assert spans_to_tags(spans, 8, "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "O"]
    assert spans_to_tags(spans, 8, "BMES") == ["B-PER", "E-PER", "S-PER", "O", "B-LOC", "M-LOC", "E-LOC", "O"]


@pytest.mark.parametrize("spans", [[("PER", 0, 2), ("LOC", 1, 3)], [("PER", 2, 2)], [("PER", 3, 5)]])
def test_spans_to_tags_rejects_bad_spans(spans: list[tuple[str, int, int]]) -> None:
    with pytest.raises(SeqtagInputError, match="span"):
        spans_to_tags(spans, 4, "IOB2")


@settings(max_examples=300, deadline=None)
@given(span_lists())
def test_round_trip_all_scheme_pairs(case: tuple[list[tuple[str, int, int]], int]) -> None:
    spans, length = case
    for src, dst in itertools.product(SCHEMES, SCHEMES):
        tags = spans_to_tags(spans, length, src)
        assert get_spans(tags, src) == spans
        assert convert(convert(tags, src, dst), dst, src) == tags, (src, dst, tags)


def test_labels_for_scheme() -> None:
    assert labels_for_scheme(["PER", "LOC", "PER"], "IOB1") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert labels_for_scheme(["X"], "bioul") == ["O", "B-X", "I-X", "E-X", "S-X"]
    assert labels_for_scheme(["X"], "BMES") == ["O", "B-X", "M-X", "E-X", "S-X"]
    assert labels_for_scheme([], "IOB2") == ["O"]


# --- allowed transitions ---


def _transitions(tags: list[str], labels: list[str]) -> list[tuple[int, int]]:
    ids = [len(labels)] + [labels.index(tag) for tag in tags] + [len(labels) + 1]
    return list(zip(ids, ids[1:]))


@settings(max_examples=200, deadline=None)
@given(span_lists())
def test_valid_sequences_use_allowed_transitions(case: tuple[list[tuple[str, int, int]], int]) -> None:
    spans, length = case
    for scheme in SCHEMES:
        labels = labels_for_scheme(TYPES, scheme)
        allowed = set(allowed_transitions(labels, scheme))
        tags = spans_to_tags(spans, length, scheme)
        assert set(_transitions(tags, labels)) <= allowed, (scheme, tags)


@pytest.mark.parametrize(
    ("tags", "scheme"),
    [
        (["I-PER"], "IOB2"),  # START -> I-x
        (["O", "I-PER"], "IOB2"),  # O -> I-x
        (["B-LOC", "I-PER"], "IOB2"),  # B-y -> I-x
        (["B-PER"], "IOB1"),  # START -> B-x
        (["O", "B-PER"], "IOB1"),  # O -> B-x
        (["I-LOC", "B-PER"], "IOB1"),  # I-y -> B-x
        (["B-PER"], "BIOES"),  # B-x -> END
        (["B-PER", "O"], "BIOES"),  # B-x -> O
        (["I-PER", "E-PER"], "BIOES"),  # START -> I-x
        (["B-PER", "E-LOC"], "BIOES"),  # B-x -> E-y
        (["S-PER", "I-PER", "E-PER"], "BIOES"),  # S-x -> I-x
        (["B-PER", "M-PER"], "BMES"),  # M-x -> END
        (["B-PER", "S-PER"], "BMES"),  # B-x -> S-x
    ],
)
def test_invalid_sequences_use_a_forbidden_transition(tags: list[str], scheme: str) -> None:
    labels = labels_for_scheme(["PER", "LOC"], scheme)
    assert not set(_transitions(tags, labels)) <= set(allowed_transitions(labels, scheme))


def test_allowed_transitions_start_end_and_none() -> None:
    labels = ["O", "B-PER", "I-PER"]
    start, end = 3, 4
    allowed = allowed_transitions(labels, "IOB2")
    assert (start, 2) not in allowed and (start, end) not in allowed and (2, end) in allowed
    assert all(j != start and i != end for i, j in allowed)
    everything = allowed_transitions(["NOUN", "VERB"], None)
    assert len(everything) == 3 * 3 - 1  # sources: 2 labels + START; targets: 2 labels + END; no START -> END


def test_allowed_transitions_accepts_bioul_spelling_and_rejects_foreign_labels() -> None:
    labels = ["O", "B-X", "I-X", "L-X", "U-X"]
    allowed = set(allowed_transitions(labels, "BIOUL"))
    assert {(1, 3), (3, 6), (5, 4), (4, 6)} <= allowed and (1, 6) not in allowed
    with pytest.raises(SeqtagInputError, match="'NOUN'"):
        allowed_transitions(["O", "NOUN"], "IOB2")
