"""configs/ner.yaml and configs/pos.yaml run with only the data paths changed: no pretrained vectors, one-character
tokens in BMES, lowercase text."""

from pathlib import Path

import pytest

from seqtag.cli import cli_main
from seqtag.data.schemes import get_spans
from seqtag.tagger import Tagger
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "seqtag" / "examples" / "quickstart"


def sentences(name: str, count: int) -> list[list[tuple[str, str]]]:
    blocks = (QUICKSTART / f"{name}.conll").read_text(encoding="utf-8").split("\n\n")[:count]
    return [[tuple(line.split()) for line in block.splitlines()] for block in blocks if block.strip()]


def characters(sentence: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A sentence of IOB2 words as one character per token with BMES tags (as Chinese NER data is written)."""
    tags = ["O"] * len(sentence)
    for type_, start, end in get_spans([tag for _, tag in sentence], "IOB2"):
        tags[start:end] = [f"{type_}@{start}"] * (end - start)  # the span each word belongs to
    out, i = [], 0
    while i < len(sentence):
        j = i + 1
        while tags[i] != "O" and j < len(sentence) and tags[j] == tags[i]:
            j += 1
        chars = "".join(word for word, _ in sentence[i:j])
        if tags[i] == "O":
            out += [(c, "O") for c in chars]
        else:
            type_ = tags[i].split("@")[0]
            prefixes = ["S"] if len(chars) == 1 else ["B", *["M"] * (len(chars) - 2), "E"]
            out += [(c, f"{p}-{type_}") for c, p in zip(chars, prefixes)]
        i = j
    return out


def write_split(path: Path, rows: list[list[tuple[str, str]]]) -> str:
    return str(write(path, "\n".join("\n".join(f"{t} {g}" for t, g in s) + "\n" for s in rows)))


@pytest.mark.parametrize(
    "config, kind",
    [("ner", "words"), ("ner", "bmes"), ("ner", "lowercase"), ("pos", "lowercase")],
)
def test_the_config_runs_with_only_the_paths_changed(tmp_path, config, kind):
    splits = {}
    for role, name, count in (("train", "train", 80), ("validation", "dev", 20), ("test", "test", 20)):
        rows = sentences(name, count)
        if kind == "bmes":
            rows = [characters(s) for s in rows]
        elif kind == "lowercase":
            rows = [[(t.lower(), g) for t, g in s] for s in rows]
        if config == "pos":  # plain classes: the entity types (and O) as labels
            rows = [[(t, g.split("-")[-1]) for t, g in s] for s in rows]
        splits[role] = write_split(tmp_path / f"{name}.conll", rows)
    cli = cli_main([
        "fit", f"--config={ROOT / 'configs' / f'{config}.yaml'}",
        *(f"--data.{role}={path}" for role, path in splits.items()),
        f"--data.cache_dir={tmp_path / 'cache'}", "--trainer.max_epochs=1", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ])  # fmt: skip
    data = cli.datamodule
    assert data.hparams.word_vectors is None
    expected = {("ner", "bmes"): "BMES", ("ner", "words"): "IOB2", ("ner", "lowercase"): "IOB2"}.get((config, kind))
    assert data.data_scheme == expected
    if kind == "bmes":
        assert all(len(token) == 1 for tokens in data.sentences("train")["tokens"] for token in tokens)
    tagger = Tagger.load(cli.trainer.checkpoint_callback.best_model_path)
    assert tagger.hparams.char_encoder == "lstm" and tagger.hparams.word_dim == 100
    assert (tagger.crf is not None) == (config == "ner")
