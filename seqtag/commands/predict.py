"""``seqtag predict`` on one device without Lightning: the checkpoint's network, the data streamed in chunks, the
predictions written in input order. The file is the one the Lightning path writes (tests compare them byte for byte).

Why not LightningCLI here: a whole ``seqtag predict`` of CoNLL-2003's test set (3,453 sentences, the NCRF++-size
model, 1 thread) took 7.6 s through LightningCLI, of which about 4.5 s importing Lightning and torchmetrics and 1-2 s
building the command-line parser from the classes' signatures; tagging itself took 0.5 s. This path imports torch
and seqtag's network only (docs/speed.md has the figures).

It runs when every option given is one of those below and the model is a checkpoint file (``--ckpt_path``) or a
model folder or Hub name (``--model``); anything else (``--config``, trainer options other than these, several
devices, precision, a vectors file, a model with character LMs) goes through LightningCLI, which writes the same file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from seqtag.console import flag
from seqtag.data.predict_input import READING_OPTIONS
from seqtag.errors import SeqtagInputError

# The data module's defaults for the options read here (TaggingDataModule.__init__; a test checks they agree).
DATA_DEFAULTS: dict[str, Any] = {
    "format": "auto",
    "token_column": None,
    "tag_column": None,
    "hub_config": None,
    "feature_columns": None,
    "encoding": "utf-8",
    "eval_batch_size": 256,
    "eval_bucketing": "auto",
    "bucketing": "exact",
    "batch_by_document": None,
    "predict_chunk_size": 10_000,
}
# Data options taken from the checkpoint unless given (SeqtagCLI.READING_OPTIONS, less unknown_labels: tagging
# scores nothing).
FROM_CHECKPOINT = (*READING_OPTIONS, "eval_bucketing")


def _value(text: str) -> Any:
    """A command-line value as jsonargparse reads it: YAML (``[POS, CHUNK]``, ``null``, ``3``)."""
    import yaml

    return yaml.safe_load(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqtag predict", add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--ckpt_path")
    parser.add_argument("--model")
    parser.add_argument("--data.predict", dest="predict")
    parser.add_argument("--predict_output")
    parser.add_argument("--predict_format", choices=("conll", "jsonl"))
    parser.add_argument("--n_best", type=int, default=0)
    parser.add_argument("--marginals", type=flag, nargs="?", const=True, default=False)
    for name in DATA_DEFAULTS:
        parser.add_argument(f"--data.{name}", dest=name, type=_value)
    parser.add_argument("--trainer.default_root_dir", dest="root", default="runs")
    parser.add_argument("--trainer.accelerator", dest="accelerator", default="auto")
    parser.add_argument("--trainer.devices", dest="devices", type=_value, default="auto")
    parser.add_argument("--trainer.enable_progress_bar", dest="progress_bar", type=flag, default=True)
    parser.add_argument("--trainer.logger", dest="logger", type=_value, default=None)  # tagging logs nothing
    return parser


def _device(accelerator: str, devices: Any) -> str | None:
    """The one device to tag on, or None when Lightning would use several, or a kind this path does not run."""
    import torch

    if accelerator not in ("auto", "cpu", "gpu", "cuda") or devices not in ("auto", 1, "1"):
        return None
    gpus = torch.cuda.device_count() if accelerator != "cpu" else 0
    if gpus == 0:
        if accelerator in ("gpu", "cuda"):
            return None  # Lightning says that there is no GPU
        mps = getattr(torch.backends, "mps", None)
        return None if accelerator == "auto" and mps is not None and mps.is_available() else "cpu"
    if gpus > 1 and devices == "auto":
        return None  # every GPU: DDP
    return "cuda:0"


def predict_main(args: list[str]) -> int | None:
    """Runs ``seqtag predict`` with ``args`` (those after ``predict``) and returns the exit status, or returns None
    without doing anything when the arguments need LightningCLI."""
    if any(a in ("-h", "--help") for a in args):
        return None
    try:
        options, unknown = _parser().parse_known_args(args)
    except argparse.ArgumentError:
        return None  # a value this parser does not take: LightningCLI says what is wrong with it
    if unknown or options.predict is None or bool(options.ckpt_path) == bool(options.model):
        return None
    if options.logger not in (None, False):
        return None  # a logger asked for on the command line: Lightning's run logs to it
    ckpt_path = options.ckpt_path
    if options.model:
        from seqtag.commands.hub import model_as_checkpoint

        rewritten = model_as_checkpoint(["predict", "--model", options.model])
        if "--ckpt_path" not in rewritten:
            return None  # a model config, not a folder or Hub name
        ckpt_path = rewritten[rewritten.index("--ckpt_path") + 1]
    if not os.path.isfile(ckpt_path):
        return None  # "last", "best" or a missing file: Lightning's own handling and message
    device = _device(str(options.accelerator).lower(), options.devices)
    if device is None:
        return None

    from seqtag.data.vocab import load_checkpoint

    checkpoint = load_checkpoint(ckpt_path)  # cached: the Lightning path reads it again for free
    if "hyper_parameters" not in checkpoint:
        raise SeqtagInputError(f"{ckpt_path}: not a seqtag tagger checkpoint (no hyperparameters)")
    from seqtag.network import CHAR_LM_KEY

    if checkpoint.get(CHAR_LM_KEY):
        return None  # character LMs are LightningModules
    return _predict(checkpoint, Path(ckpt_path), options, device)


def _data_options(checkpoint: dict[str, Any], options: argparse.Namespace) -> dict[str, Any]:
    """The data options: given, else the checkpoint's reading options, else the data module's defaults."""
    saved = checkpoint.get("datamodule_hyper_parameters") or {}
    data = {}
    for name, default in DATA_DEFAULTS.items():
        given = getattr(options, name)
        if given is not None:
            data[name] = given
        elif name in FROM_CHECKPOINT or name == "batch_by_document":
            data[name] = saved.get(name, default)
        else:
            data[name] = default
    return data


def _predict(checkpoint: dict[str, Any], ckpt_path: Path, options: argparse.Namespace, device: str) -> int:
    import functools

    import torch

    from seqtag.atomic import atomic_open
    from seqtag.data.predict_input import read_sentences
    from seqtag.data.streaming import PredictStream, chunk_batches, encode_sentence, encode_with_text
    from seqtag.data.vocab import Vocab
    from seqtag.network import TaggerNetwork, length_mask
    from seqtag.ordered_output import ChunkOrderedWriter
    from seqtag.records import output_format, prediction_text
    from seqtag.tagging import DecodeOptions, decode_outputs

    fmt = output_format(options.predict_output, options.predict_format, options.n_best, options.marginals)
    data = _data_options(checkpoint, options)
    if data["predict_chunk_size"] < 1:
        raise SeqtagInputError(f"predict_chunk_size should be >= 1, got {data['predict_chunk_size']}")
    # oneDNN keeps the LSTM it compiled for each batch shape (see PredictionWriter.on_predict_start).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
    model = TaggerNetwork.from_checkpoint(checkpoint, device)
    if model.vocab is None:
        vocab_file = ckpt_path.parent / "vocab.json"
        if not vocab_file.exists():
            raise SeqtagInputError(f"{ckpt_path}: the checkpoint holds no vocabulary and {vocab_file} is missing")
        model.vocab = Vocab.load(vocab_file)
    vocab = model.vocab
    if len(vocab.features) != len(data["feature_columns"] or []):
        raise SeqtagInputError(
            f"the model reads {len(vocab.features)} feature columns but data.feature_columns is "
            f"{data['feature_columns']}: use the training's data options"
        )
    by_document = data["batch_by_document"] if data["batch_by_document"] is not None else model.reads_documents
    if model.reads_documents and not by_document:
        raise SeqtagInputError(
            f"model.{model.document_option} looks across the sentences of a document, but "
            "data.batch_by_document is false: leave it unset (or true)"
        )
    bucketing = data["eval_bucketing"]
    if bucketing == "auto":
        bucketing = data["bucketing"] if device == "cpu" else "sorted"
    batch_size = data["eval_batch_size"]
    encode = functools.partial(encode_sentence, vocab)
    if model.reads_token_text:
        encode = functools.partial(encode_with_text, encode)
    stream = PredictStream(
        lambda: read_sentences(options.predict, data, vocab.tokenize_mode),
        encode,
        functools.partial(chunk_batches, batch_size=batch_size, bucketing=bucketing, by_document=by_document),
        data["predict_chunk_size"],
        document_piece=batch_size if by_document else None,
    )
    decode = DecodeOptions(spans=fmt == "jsonl", n_best=options.n_best, marginals=options.marginals)
    source = Path(str(options.predict).rstrip("/"))
    output = Path(options.predict_output or Path(options.root, "predictions", f"{source.name}.pred.{fmt}"))
    show = options.progress_bar and sys.stderr.isatty()
    with atomic_open(output, "wb") as file, torch.inference_mode():
        writer = ChunkOrderedWriter(file)
        for batch in stream:
            streamed = batch.pop("sentences")
            batch = {k: v.to(device) for k, v in batch.items()}
            emissions = model(batch)  # (B, T, K)
            mask = length_mask(batch["lengths"], emissions.shape[1])
            outputs = decode_outputs(model, emissions, mask, decode)
            texts = [
                (int(index), prediction_text(row, out, fmt))
                for row, index, out in zip(streamed.rows, batch["index"].tolist(), outputs, strict=True)
            ]
            writer.add(streamed.chunk, streamed.chunk_start, streamed.chunk_size, texts)
            if show:
                print(f"\rTagged {writer.sentences:,} sentences", end="", file=sys.stderr, flush=True)
        writer.finish()
    if show:
        print(file=sys.stderr)
    print(f"Predictions for {writer.sentences} sentences written to {output}")
    return 0
