"""Tests for ``seqtag score`` (seqtag.score.score_main)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqtag.errors import DataFormatError, SeqtagInputError
from seqtag.score import score_main

# CoNLL-2003 style (IOB1): token, POS, chunk, gold, predicted.
CONLL = """-DOCSTART- -X- -X- O O

EU NNP B-NP I-ORG I-ORG
rejects VBZ B-VP O O
German JJ B-NP I-MISC I-MISC
call NN I-NP O O
. . O O O

Peter NNP B-NP I-PER I-PER
Blackburn NNP I-NP I-PER I-LOC

BRUSSELS NNP B-NP I-LOC I-LOC
"""


def _write(tmp_path: Path, text: str, name: str = "pred.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_conlleval_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert score_main([_write(tmp_path, CONLL)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "processed 8 tokens with 4 phrases; found: 5 phrases; correct: 3.",
        "accuracy:  87.50%; precision:  60.00%; recall:  75.00%; FB1:  66.67",
        "              LOC: precision:  50.00%; recall: 100.00%; FB1:  66.67  2",
        "             MISC: precision: 100.00%; recall: 100.00%; FB1: 100.00  1",
        "              ORG: precision: 100.00%; recall: 100.00%; FB1: 100.00  1",
        "              PER: precision:   0.00%; recall:   0.00%; FB1:   0.00  1",
    ]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    score_main([_write(tmp_path, CONLL), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["scheme"] == "IOB1"  # detected: spans start with I-
    assert (result["tokens"], result["n_gold"], result["n_pred"], result["tp"]) == (8, 4, 5, 3)
    assert result["precision"] == pytest.approx(0.6) and result["recall"] == pytest.approx(0.75)
    assert result["per_type"]["LOC"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
        "tp": 1,
        "n_pred": 2,
    }


def test_scheme_option_and_delimiter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "a\tB-X\tB-X\nb\tI-X\tB-X\n\nc\tS-Y\tS-Y\n"
    path = _write(tmp_path, text)
    score_main([path, "--scheme", "bioes", "--delimiter", "\t", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (result["scheme"], result["n_gold"], result["n_pred"], result["tp"]) == ("BIOES", 2, 3, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a B-X B-X\nb\n", ":2: expected at least 2 columns"),
        ("a NN B-X B-X\n\nb I-X O\n", ":3: expected 4 columns as on line 1, got 3"),
        ("a B-X E-X\n", ":1: predicted tag 'E-X' is not a tag of scheme IOB2"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text, "bad.txt")
    with pytest.raises(DataFormatError, match=f"bad.txt{message}"):
        score_main([path])


def test_non_span_gold_cannot_be_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, "dogs NOUN NOUN\nbark VERB NOUN\n", "pos.txt")
    with pytest.raises(DataFormatError, match="pos.txt:1: gold tag 'NOUN' is not a span tag"):
        score_main([path])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SeqtagInputError, match="no such file"):
        score_main([str(tmp_path / "nope.txt")])


def test_tokens_and_predictions_without_gold_are_named(tmp_path: Path) -> None:
    """`seqtag predict` on plain text writes token and predicted tag only: there is nothing to score against."""
    path = _write(tmp_path, "Angela B-PER\nMerkel I-PER\nvisited O\nParis B-LOC\n\nThe O\nEU B-ORG\n", "plain.pred")
    message = r"plain.pred: no gold tags: the file has 2 columns and the first \('Angela', 'Merkel', 'visited', "
    with pytest.raises(DataFormatError, match=message + r"\.\.\.\) looks like tokens, not tags"):
        score_main([path])
    with pytest.raises(DataFormatError, match="no gold tags"):  # part-of-speech predictions alike
        score_main([_write(tmp_path, "dogs NOUN\nbark VERB\nloudly ADV\n", "pos.pred")])


def test_two_columns_of_tags_are_scored_even_when_all_wrong(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, "B-PER O\nI-PER O\nO B-LOC\nO O\n", "gold_pred.txt")
    assert score_main([path, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_gold"], result["n_pred"], result["tp"]) == (1, 1, 0)
