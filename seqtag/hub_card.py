"""The model card (``README.md``) of a Hub model folder: Hub metadata as YAML front matter, then what the model tags,
how it is built, what it was trained on, its test scores and how to use it. Written by :mod:`seqtag.hub`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqtag.data import schemes

# Data file extensions: a name with one of these that is no file here is a path from the training machine, not a hub
# dataset.
DATA_SUFFIXES = (".conll", ".conllu", ".txt", ".json", ".jsonl", ".parquet", ".gz", ".tsv", ".iob", ".bio", ".csv")
HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SPLITS = ("train", "validation", "test")


def hub_dataset(source: str | None, data_format: str | None = None) -> str | None:
    """The hub dataset name of a data source (``owner/name``, without a ``:split``), or None for a file or folder."""
    if not source:
        return None
    name = source.split(":", 1)[0] if HUB_DATASET.match(source.split(":", 1)[0]) else source
    if data_format == "hub":
        return name
    if Path(name).exists() or not HUB_DATASET.match(name) or name.lower().endswith(DATA_SUFFIXES):
        return None
    return name


def _architecture(model: dict[str, Any]) -> str:
    """E.g. ``BiLSTM-CRF`` or ``BiGRU-softmax``."""
    return f"Bi{str(model.get('cell', 'lstm')).upper()}-{'CRF' if model.get('head', 'crf') == 'crf' else 'softmax'}"


def _label_lines(vocab: dict[str, Any], model: dict[str, Any]) -> list[str]:
    labels = list(model.get("labels") or vocab.get("labels") or [])
    train_scheme = model.get("scheme") or vocab.get("scheme")
    data_scheme = vocab.get("data_scheme") or train_scheme
    if not train_scheme:
        return [f"Plain classes, one per token ({len(labels)}): {', '.join(f'`{t}`' for t in labels)}.", ""]
    types = sorted({t for t in (schemes.split_tag(label)[1] for label in labels) if t})
    output = schemes.labels_for_scheme(types, data_scheme)
    return [
        f"Span types ({len(types)}): {', '.join(f'`{t}`' for t in types)}.",
        "",
        f"Tags are written in the **{data_scheme}** scheme of the training data ({' '.join(output)}); the model "
        f"decodes in {train_scheme}{' under its transition constraints' if model.get('head', 'crf') == 'crf' else ''}.",
        "",
    ]


def _model_lines(model: dict[str, Any], vocab: dict[str, Any], pretrained_words: int) -> list[str]:
    char_lms = [d for d in ("forward", "backward") if model.get(f"char_lm_{d}")]
    rows = [
        ("architecture", _architecture(model)),
        ("word vectors", f"{model.get('word_dim')} dims, {len(vocab.get('words', []))} words from training"),
        ("pretrained table (words unseen in training)", f"{pretrained_words} words" if pretrained_words else "none"),
        ("character encoder", f"{model.get('char_encoder')} ({model.get('char_hidden')})"),
        ("encoder", f"{model.get('num_layers')} layer(s) of {model.get('hidden_size')} per direction"),
        ("casing feature", model.get("casing_dim") or "off"),
        ("input feature columns", len(vocab.get("features") or []) or "none"),
        ("character LMs", ", ".join(char_lms) or "none"),
        ("document memory / context", f"{bool(model.get('document_memory'))} / {bool(model.get('document_context'))}"),
        ("lowercased lookup", bool(vocab.get("lowercase"))),
    ]
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]


def _data_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for split in SPLITS:
        source = data.get(split)
        if not source:
            continue
        name = hub_dataset(source, data.get("format"))
        shown = f"[{source}](https://huggingface.co/datasets/{name})" if name else f"`{source}`"
        lines.append(f"- {split}: {shown}")
    if data.get("validation_from_train"):
        lines.append(f"- validation: the last {100 * data['validation_from_train']:g}% of train")
    if data.get("word_vectors"):
        lines.append(f"- pretrained vectors: `{Path(str(data['word_vectors'])).name}`")
    if data.get("feature_columns"):
        lines.append(f"- input feature columns: {data['feature_columns']}")
    return [*(lines or ["Not recorded."]), ""]


def _usage_lines(repo_id: str, vocab: dict[str, Any]) -> list[str]:
    features = len(vocab.get("features") or [])
    python = (
        [f"tags = tagger.tag([tokens], features=[[values_of_column_1, ...]])  # {features} column(s), a value a token"]
        if features
        else [
            'records = tagger.predict("EU rejects German call to boycott British lamb.")  # tokens, tags, spans',
            'tags = tagger.tag([["EU", "rejects", "German", "call"]])  # one list of tags per token list',
        ]
    )
    return [
        "With seqtag installed:",
        "",
        "```bash",
        f"seqtag predict --model {repo_id} --data.predict sentences.txt --predict_output tagged.jsonl",
        "```",
        "",
        "```python",
        "from seqtag import Tagger",
        "",
        f'tagger = Tagger.from_pretrained("{repo_id}")',
        *python,
        "```",
        "",
    ]


def _metadata(config: dict[str, Any], repo_id: str, language: str | Sequence[str] | None, tags: Sequence[str]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    model, data, results = config["model"], config.get("data") or {}, config.get("test_results")
    datasets = sorted({n for n in (hub_dataset(data.get(s), data.get("format")) for s in SPLITS) if n})
    span = bool(model.get("scheme"))
    all_tags = ["seqtag", "token-classification", "sequence-labeling", _architecture(model).lower()]
    all_tags += [t for t in tags if t not in all_tags]
    eval_results = None
    test_dataset = hub_dataset(data.get("test"), data.get("format"))
    if results and test_dataset:
        keys = ("f1", "precision", "recall", "accuracy") if span else ("accuracy",)
        eval_results = [
            EvalResult(
                task_type="token-classification",
                dataset_type=test_dataset,
                dataset_name=test_dataset.split("/")[-1],
                dataset_config=data.get("hub_config"),
                dataset_split="test",
                metric_type=key,
                metric_value=round(float(results[key]), 4),
                metric_name=f"span {key}" if key != "accuracy" else "token accuracy",
            )
            for key in keys
            if key in results
        ]
    card_data = ModelCardData(
        language=language if isinstance(language, str) or language is None else list(language),
        library_name="seqtag",
        pipeline_tag="token-classification",
        tags=all_tags,
        datasets=datasets or None,
        metrics=(["f1", "precision", "recall"] if span else ["accuracy"]) if results else None,
        model_name=repo_id.rstrip("/").split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )
    return card_data.to_yaml()


def model_card(
    config: dict[str, Any],
    vocab: dict[str, Any],
    repo_id: str,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
) -> str:
    """The text of ``README.md`` for a model folder's ``config.json`` content and vocabulary.

    Args:
        config: what :func:`seqtag.hub.save_checkpoint_dict` writes to ``config.json``.
        vocab: the vocabulary as a dict (``vocab.json``).
        repo_id: the Hub name (or folder) the usage snippet loads; its last part titles the card.
        language: language code(s) for the metadata; omitted when None.
        tags: tags besides seqtag's own.
    """
    from seqtag.report import markdown_table

    model, data, results = config["model"], config.get("data") or {}, config.get("test_results")
    title = repo_id.rstrip("/").split("/")[-1] or "seqtag tagger"
    lines = [
        "---",
        _metadata(config, repo_id, language, tags).rstrip("\n"),
        "---",
        "",
        f"# {title}",
        "",
        f"A {_architecture(model)} sequence tagger trained with seqtag {config.get('seqtag_version', '')}.".replace(
            "  ", " "
        ),
        "",
        "## Labels",
        "",
        *_label_lines(vocab, model),
        "## Model",
        "",
        *_model_lines(model, vocab, int(config.get("pretrained_words") or 0)),
        "## Training data",
        "",
        *_data_lines(data),
        "## Test scores",
        "",
    ]
    if results:
        test = data.get("test")
        lines += [
            f"Scored by `seqtag test`{f' (the training configuration names `{test}` as test data)' if test else ''}:",
            "",
            markdown_table(results).rstrip("\n"),
            "",
        ]
    else:
        lines += ["Not recorded (`seqtag test` had written no `test_report.json` beside the checkpoint).", ""]
    lines += ["## Usage", "", *_usage_lines(repo_id, vocab)]
    return "\n".join(lines)
