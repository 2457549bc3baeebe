"""Tests for seqtag.metrics, with seqeval (default, conlleval-compatible mode) as the oracle.

Run with ``-s`` to see how many random cases were compared with seqeval.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

from seqtag.data.schemes import SCHEMES, get_spans, labels_for_scheme
from seqtag.metrics import SpanF1, TokenAccuracy, format_conlleval, span_counts, span_scores

TYPES = ["PER", "LOC", "ART-WORK"]
# Prefixes drawn per scheme: every prefix conlleval knows, valid or not, plus the scheme's own spellings.
PREFIXES = {"IOB1": "BIESO", "IOB2": "BIESO", "BIOES": "BIESLUO", "BMES": "BIMESO"}
# seqeval knows B, I, E, S only: spell M as I and L, U as E, S for it (get_spans reads them that way).
ORACLE_SPELLING = {"IOB1": {}, "IOB2": {}, "BIOES": {"L": "E", "U": "S"}, "BMES": {"M": "I"}}

COMPARED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_compared() -> Iterator[None]:
    yield
    print(f"\nrandom cases compared with seqeval: {dict(COMPARED)}, total {sum(COMPARED.values())}")


def _tag(prefix: str, type_: str) -> str:
    return "O" if prefix == "O" else f"{prefix}-{type_}"


def _oracle_spelling(tags: list[str], scheme: str) -> list[str]:
    mapping = ORACLE_SPELLING[scheme]
    return [mapping.get(tag[0], tag[0]) + tag[1:] if tag != "O" else tag for tag in tags]


def _oracle_spans(tags: list[str], scheme: str) -> set[tuple[str, int, int]]:
    """seqeval's chunks with an exclusive end."""
    return {(type_, start, end + 1) for type_, start, end in get_entities(_oracle_spelling(tags, scheme))}


def _random_corpus(rng: random.Random, scheme: str) -> tuple[list[list[str]], list[list[str]]]:
    lengths = [rng.randint(1, 8) for _ in range(rng.randint(1, 3))]
    prefixes = PREFIXES[scheme]

    def sentence(n: int) -> list[str]:
        return [_tag(rng.choice(prefixes), rng.choice(TYPES)) for _ in range(n)]

    return [sentence(n) for n in lengths], [sentence(n) for n in lengths]


def _mismatches(gold: list[list[str]], pred: list[list[str]], scheme: str) -> list[str]:
    """Differences between seqtag and seqeval on one corpus (chunks, per-type counts and scores, micro scores)."""
    problems = []
    for tags in gold + pred:
        spans = get_spans(tags, scheme)
        if len(set(spans)) != len(spans) or set(spans) != _oracle_spans(tags, scheme):
            problems.append(f"spans of {tags}: {spans}")
    report = span_scores(gold, pred, scheme)
    oracle_gold = [_oracle_spelling(tags, scheme) for tags in gold]
    oracle_pred = [_oracle_spelling(tags, scheme) for tags in pred]
    p, r, f, support = precision_recall_fscore_support(oracle_gold, oracle_pred, average=None, zero_division=0)
    types = sorted(report["per_type"])
    oracle_types = sorted({t for tags in oracle_gold + oracle_pred for t, _, _ in get_entities(tags)})
    if types != oracle_types:
        return [*problems, f"types {types} != {oracle_types}"]
    for k, type_ in enumerate(types):
        ours = report["per_type"][type_]
        if ours["support"] != support[k] or (ours["precision"], ours["recall"], ours["f1"]) != pytest.approx(
            (p[k], r[k], f[k])
        ):
            problems.append(f"{type_}: {ours} vs {(p[k], r[k], f[k], support[k])}")
    micro = precision_recall_fscore_support(oracle_gold, oracle_pred, average="micro", zero_division=0)[:3]
    if (report["precision"], report["recall"], report["f1"]) != pytest.approx(micro):
        problems.append(f"micro {report} vs {micro}")
    return problems


@pytest.mark.parametrize("scheme", SCHEMES)
def test_seeded_random_cases_match_seqeval(scheme: str) -> None:
    rng = random.Random(f"seqtag-{scheme}")
    n_cases = 5000
    failures = [problem for _ in range(n_cases) for problem in _mismatches(*_random_corpus(rng, scheme), scheme)]
    COMPARED[f"seeded {scheme}"] += n_cases
    print(f"\n{scheme}: {n_cases} seeded random cases compared with seqeval, {len(failures)} mismatches")
    assert failures == []


@st.composite
def corpora(draw: st.DrawFn, scheme: str) -> tuple[list[list[str]], list[list[str]]]:
    tag = st.sampled_from(sorted({_tag(prefix, type_) for prefix in PREFIXES[scheme] for type_ in TYPES}))
    lengths = draw(st.lists(st.integers(1, 10), min_size=1, max_size=3))
    gold = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
    pred = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
    return gold, pred


def _check_against_seqeval_report(gold: list[list[str]], pred: list[list[str]], scheme: str) -> None:
    oracle_gold = [_oracle_spelling(tags, scheme) for tags in gold]
    oracle_pred = [_oracle_spelling(tags, scheme) for tags in pred]
    for tags in gold + pred:
        assert get_spans(tags, scheme) == sorted(_oracle_spans(tags, scheme), key=lambda span: span[1])
    report = span_scores(gold, pred, scheme)
    oracle = classification_report(oracle_gold, oracle_pred, output_dict=True, zero_division=0)
    for type_, scores in report["per_type"].items():
        assert scores["support"] == oracle[type_]["support"]
        assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(
            (oracle[type_]["precision"], oracle[type_]["recall"], oracle[type_]["f1-score"])
        )
    assert set(report["per_type"]) == set(oracle) - {"micro avg", "macro avg", "weighted avg"}
    micro = oracle["micro avg"]  # what precision_score, recall_score and f1_score return
    assert (report["precision"], report["recall"], report["f1"]) == pytest.approx(
        (micro["precision"], micro["recall"], micro["f1-score"])
    )
    COMPARED[f"hypothesis {scheme}"] += 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # seqeval's macro average over no types
@pytest.mark.parametrize("scheme", SCHEMES)
def test_hypothesis_cases_match_seqeval(scheme: str) -> None:
    @settings(max_examples=1000, deadline=None, database=None)
    @given(corpora(scheme))
    def check(case: tuple[list[list[str]], list[list[str]]]) -> None:
        _check_against_seqeval_report(*case, scheme)

    check()


# --- hand-made cases ---


def test_span_counts_and_token_accuracy() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG"]]
    assert span_counts(gold, pred, "IOB2") == {"LOC": (1, 1, 1), "ORG": (1, 1, 1), "PER": (1, 1, 1)}
    report = span_scores(gold, pred, "IOB2")
    assert report["f1"] == 1.0 and report["accuracy"] == pytest.approx(3 / 5)


def test_span_counts_needs_matching_lengths() -> None:
    with pytest.raises(ValueError, match="as many predicted as gold tags"):
        span_counts([["O", "O"]], [["O"]], "IOB2")


def test_format_conlleval_layout() -> None:
    gold = [["B-LOC", "I-LOC", "O", "B-PER"], ["B-LOC", "O"]]
    pred = [["B-LOC", "I-LOC", "O", "B-LOC"], ["B-LOC", "B-PER"]]
    assert format_conlleval(span_scores(gold, pred, "IOB2")).splitlines() == [
        "processed 6 tokens with 3 phrases; found: 4 phrases; correct: 2.",
        "accuracy:  66.67%; precision:  50.00%; recall:  66.67%; FB1:  57.14",
        "              LOC: precision:  66.67%; recall: 100.00%; FB1:  80.00  3",
        "              PER: precision:   0.00%; recall:   0.00%; FB1:   0.00  1",
    ]


# --- torchmetrics classes ---


def _encode(
    corpus: list[list[str]], labels: list[str], length: int, pad_id: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(corpus), length), pad_id, dtype=torch.long)  # (B, T)
    for b, tags in enumerate(corpus):
        ids[b, : len(tags)] = torch.tensor([labels.index(tag) for tag in tags])
    mask = torch.arange(length)[None, :] < torch.tensor([len(tags) for tags in corpus])[:, None]  # (B, T)
    return ids, mask


@pytest.mark.parametrize("scheme", SCHEMES)
def test_span_f1_matches_seqeval_on_padded_batches(scheme: str) -> None:
    rng = random.Random(f"span-f1-{scheme}")
    labels = labels_for_scheme(TYPES, scheme)
    metric = SpanF1(labels, scheme)
    all_gold, all_pred = [], []
    for _ in range(50):
        gold = [[rng.choice(labels) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 8))]
        pred = [[rng.choice(labels) for _ in tags] for tags in gold]
        length = max(map(len, gold)) + rng.randint(0, 3)
        target, mask = _encode(gold, labels, length)
        preds, _ = _encode(pred, labels, length, pad_id=0)
        metric.update(preds, target, mask)
        all_gold += gold
        all_pred += pred
    result = metric.compute()
    oracle_gold = [_oracle_spelling(tags, scheme) for tags in all_gold]
    oracle_pred = [_oracle_spelling(tags, scheme) for tags in all_pred]
    assert float(result["precision"]) == pytest.approx(precision_score(oracle_gold, oracle_pred), rel=1e-6)
    assert float(result["recall"]) == pytest.approx(recall_score(oracle_gold, oracle_pred), rel=1e-6)
    assert float(result["f1"]) == pytest.approx(f1_score(oracle_gold, oracle_pred), rel=1e-6)
    accuracy = sum(g == p for gs, ps in zip(all_gold, all_pred) for g, p in zip(gs, ps)) / sum(map(len, all_gold))
    assert float(result["accuracy"]) == pytest.approx(accuracy, rel=1e-6)
    oracle = classification_report(oracle_gold, oracle_pred, output_dict=True)
    for type_ in TYPES:
        assert result["per_type"][type_]["support"] == oracle[type_]["support"]
        assert result["per_type"][type_]["f1"] == pytest.approx(oracle[type_]["f1-score"])
    assert all(isinstance(result[key], torch.Tensor) and result[key].is_floating_point() for key in ("f1", "accuracy"))


def test_span_f1_merged_halves_equal_one_metric() -> None:
    """Summing the states of two metrics (what DDP's sum reduction does) equals one metric over all batches."""
    rng = random.Random(7)
    labels = labels_for_scheme(["PER", "LOC"], "IOB2")
    batches = []
    for _ in range(10):
        gold = [[rng.choice(labels) for _ in range(rng.randint(1, 9))] for _ in range(4)]
        target, mask = _encode(gold, labels, 10)
        preds, _ = _encode([[rng.choice(labels) for _ in tags] for tags in gold], labels, 10, pad_id=0)
        batches.append((preds, target, mask))
    whole, first, second = SpanF1(labels, "IOB2"), SpanF1(labels, "IOB2"), SpanF1(labels, "IOB2")
    for i, batch in enumerate(batches):
        whole.update(*batch)
        (first if i % 2 else second).update(*batch)
    for name in ("tp", "n_pred", "n_gold", "correct_tokens", "total_tokens"):
        setattr(first, name, getattr(first, name) + getattr(second, name))
        assert torch.equal(getattr(first, name), getattr(whole, name)), name
    assert first.compute()["per_type"] == whole.compute()["per_type"]
    assert float(first.compute()["f1"]) == float(whole.compute()["f1"])
    # torchmetrics' own merge path gives the same.
    third, fourth = SpanF1(labels, "IOB2"), SpanF1(labels, "IOB2")
    for i, batch in enumerate(batches):
        (third if i < 5 else fourth).update(*batch)
    third.merge_state(fourth)
    assert float(third.compute()["f1"]) == float(whole.compute()["f1"])


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_span_f1_empty_and_bad_inputs() -> None:
    metric = SpanF1(["O", "B-PER", "I-PER"], "BIO")
    result = metric.compute()
    assert float(result["f1"]) == 0.0 and result["per_type"]["PER"]["support"] == 0
    with pytest.raises(ValueError, match="TokenAccuracy"):
        SpanF1(["NOUN", "VERB"], "IOB2")
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="label ids"):
        metric.update(torch.full((1, 2), 3), torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_token_accuracy_ignores_padding() -> None:
    metric = TokenAccuracy()
    preds = torch.tensor([[1, 2, 0, 0], [3, 3, 3, 9]])
    target = torch.tensor([[1, 0, 0, -100], [3, 3, 1, -100]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    metric.update(preds, target, mask)
    assert float(metric.compute()) == pytest.approx(4 / 6)
    assert float(TokenAccuracy().compute()) == 0.0


def test_span_f1_counts_token_accuracy_in_the_data_scheme() -> None:
    """A BIOES model scored on IOB1 data: accuracy as conlleval computes it on the IOB1 strings, spans unchanged."""
    labels = labels_for_scheme(["LOC", "PER"], "BIOES")
    gold = [["S-PER", "O", "B-LOC", "E-LOC"], ["S-LOC", "S-LOC"]]
    pred = [["S-PER", "O", "S-LOC", "S-LOC"], ["S-LOC", "S-LOC"]]  # B-LOC/E-LOC vs S-LOC S-LOC: different spans
    ids = [[labels.index(tag) for tag in sentence] for sentence in (*gold, *pred)]
    pad = max(map(len, ids))
    tensor = torch.tensor([row + [0] * (pad - len(row)) for row in ids])
    mask = torch.tensor([[i < len(row) for i in range(pad)] for row in ids])
    in_iob1 = SpanF1(labels, "BIOES", data_scheme="IOB1")
    in_bioes = SpanF1(labels, "BIOES")
    for metric in (in_iob1, in_bioes):
        metric.update(tensor[2:], tensor[:2], mask[:2])
    # IOB1: gold "I-PER O I-LOC I-LOC | I-LOC B-LOC", predicted "I-PER O I-LOC B-LOC | I-LOC B-LOC": 5 of 6 equal.
    assert float(in_iob1.compute()["accuracy"]) == pytest.approx(5 / 6)
    # BIOES strings: "B-LOC E-LOC" vs "S-LOC S-LOC" differ at both tokens: 4 of 6.
    assert float(in_bioes.compute()["accuracy"]) == pytest.approx(4 / 6)
    assert float(in_iob1.compute()["f1"]) == float(in_bioes.compute()["f1"])


@pytest.mark.parametrize("data_scheme", ["IOB1", "IOB2", "BIOES"])
def test_span_f1_confusion_equals_tag_confusion(data_scheme: str) -> None:
    """The confusion SpanF1 counts from the tags it rewrote equals TagConfusion's, which rewrites them itself."""
    from seqtag.metrics import TagConfusion

    labels = labels_for_scheme(["LOC", "MISC", "PER"], "BIOES")
    rng = random.Random(0)
    spans = SpanF1(labels, "BIOES", data_scheme=data_scheme, confusion=True)
    tags = TagConfusion(labels, "BIOES", data_scheme)
    assert spans.confusion_labels == tags.data_labels
    for _ in range(5):
        lengths = [rng.randint(1, 9) for _ in range(7)]
        rows = [[rng.randrange(len(labels)) for _ in range(9)] for _ in range(14)]
        preds, target = torch.tensor(rows[:7]), torch.tensor(rows[7:])
        mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
        spans.update(preds, target, mask)
        tags.update(preds, target, mask)
    result = spans.compute()
    assert torch.equal(result["confusion"], tags.compute())
    assert int(result["confusion"].sum()) == int(spans.total_tokens)
    assert float(result["accuracy"]) == pytest.approx(
        float(result["confusion"].trace()) / float(result["confusion"].sum())
    )
