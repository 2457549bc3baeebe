"""`seqtag predict` streams its input: chunks, a reorder buffer, and one output file under DDP.

The output must not depend on how the input is cut: a run with chunks of 7 sentences (many chunks, batches cut within
each) writes the same bytes as a run whose one chunk is the whole file, for raw text, CoNLL with gold tags and JSONL
with n-best and marginals; and two DDP processes write the file one process writes.
"""

import json
import random
from pathlib import Path

import pytest

from seqtag.cli import main
from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.sampler import document_batches
from seqtag.data.streaming import chunks
from seqtag.errors import DataFormatError, SeqtagInputError
from seqtag.ordered_output import ChunkOrderedWriter, merge_parts
from tests.conftest import write
from tests.test_cli import QUICKSTART, seqtag

WHOLE = 1_000_000  # a chunk larger than any input here: the whole file at once, as before streaming
COMMON = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"]


# ------------------------------------------------------------------------------------------------ without a model
def test_chunks_cut_at_size_or_where_document_batches_are_cut_anyway():
    documents = [0, 0, 0, 0, 0, 0, 0, 7, 8, 8, 8, 11]
    sentences = [{"document": d} for d in documents]
    assert [len(c) for c in chunks(sentences, 5)] == [5, 5, 2]
    # Batches of 3: [0 1 2] [3 4 5] [6 7] [8 9 10] [11] (the rest of document 0 shares a batch with document 7).
    assert [len(c) for c in chunks(sentences, 2, piece=3)] == [3, 3, 2, 4]
    for size in range(1, 14):
        for piece in range(1, 6):
            cut, start = [], 0
            for chunk in chunks(sentences, size, piece):
                cut += [[start + i for i in b] for b in document_batches([s["document"] for s in chunk], piece)]
                start += len(chunk)
            assert cut == document_batches(documents, piece), (size, piece)


def _write_share(path: Path, first: int, step: int, sizes: list[int], texts: list[str], rng: random.Random):
    """Writes chunks first, first + step, ... of ``texts`` (chunk sizes ``sizes``) in batches of 1-2 sentences that
    come in any order within a chunk and interleaved across chunks (as DataLoader workers deliver them)."""
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    batches = []
    for k in range(first, len(sizes), step):
        positions = list(range(starts[k], starts[k] + sizes[k]))
        rng.shuffle(positions)
        batches += [(k, positions[i : i + 2]) for i in range(0, len(positions), 2)]
    rng.shuffle(batches)
    with open(path, "wb") as f:
        writer = ChunkOrderedWriter(f, first, step)
        for k, batch in batches:
            writer.add(k, starts[k], sizes[k], [(i, texts[i]) for i in batch])
        assert writer.pending == 0
        return writer.finish()


def test_ordered_writer_and_merged_parts_equal_one_writer(tmp_path):
    rng = random.Random(0)
    sizes = [rng.randint(1, 6) for _ in range(9)]
    texts = [f"sentence {i} {'x' * rng.randint(0, 3)}é\n" for i in range(sum(sizes))]
    expected = "".join(texts).encode()
    table = _write_share(tmp_path / "one", 0, 1, sizes, texts, rng)
    assert (tmp_path / "one").read_bytes() == expected
    assert [chunk for chunk, _ in table] == list(range(len(sizes)))
    parts = [tmp_path / "part0", tmp_path / "part1"]
    tables = [_write_share(parts[r], r, 2, sizes, texts, rng) for r in range(2)]
    with open(tmp_path / "merged", "wb") as out:
        merge_parts(parts, tables, out)
    assert (tmp_path / "merged").read_bytes() == expected
    with open(tmp_path / "partial", "wb") as f:
        unfinished = ChunkOrderedWriter(f)
        unfinished.add(0, 0, 3, [(1, "b")])
        with pytest.raises(RuntimeError, match="predictions missing"):
            unfinished.finish()


# --------------------------------------------------------------------------------------------------- with a model
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model (2 epochs on 150 quickstart sentences)."""
    tmp = tmp_path_factory.mktemp("fit")
    split = (QUICKSTART / "train.conll").read_text().split("\n\n")
    train = write(tmp / "train.conll", "\n\n".join(split[:150]) + "\n")
    fit = seqtag(
        "fit", "--config", QUICKSTART.parent.parent.parent / "configs" / "quickstart.yaml", "--data.train", train,
        "--data.validation", "null", "--data.test", "null", "--model.word_dim", 8, "--model.hidden_size", 16,
        "--model.char_hidden", 8, "--trainer.max_epochs", 2, "--data.cache_dir", tmp / "cache",
        "--trainer.default_root_dir", tmp / "runs", *COMMON,
    )  # fmt: skip
    return Path(fit.stdout.split("Best checkpoint: ")[1].split()[0])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Raw text (lines of one, two and no sentences, blank lines between documents, short and long sentences
    interleaved) and a CoNLL file with gold tags (-DOCSTART- documents, lengths interleaved)."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = random.Random(1)
    words = "Paris Helix Pharma reported the German team beat Toronto in final Marco Chen won prize for".split()
    lines = []
    for i in range(40):
        length = 2 if i % 2 else rng.randint(12, 30)  # interleaved: exact bucketing reorders every chunk
        line = " ".join(rng.choice(words) for _ in range(length)) + " ."
        if i % 9 == 4:
            line += " Then it rained ."  # two sentences on one line
        lines.append(line)
        if i % 13 == 12:
            lines.append("")  # a new document
    text = write(folder / "new.txt", "\n".join(lines) + "\n")
    sentences = (QUICKSTART / "test.conll").read_text().strip().split("\n\n")[:45]
    sentences.sort(key=lambda s: rng.random())
    blocks = []
    for i, sentence in enumerate(sentences):
        if i % 15 == 0:
            blocks.append("-DOCSTART- O")
        blocks.append(sentence)
    conll = write(folder / "gold.conll", "\n\n".join(blocks) + "\n")
    return {"text": text, "conll": conll}


def predict(checkpoint: Path, source: Path, output: Path, chunk_size: int, *extra: str) -> bytes:
    """Runs `seqtag predict` in this process; returns the output's bytes."""
    status = main(
        ["predict", "--ckpt_path", str(checkpoint), "--data.predict", str(source), "--predict_output", str(output),
         "--data.predict_chunk_size", str(chunk_size), "--trainer.default_root_dir", str(output.parent), *COMMON,
         *extra]
    )  # fmt: skip
    assert status == 0
    return output.read_bytes()


def same_up_to_float_rounding(a, b) -> bool:
    """Equal JSON values, numbers within 2e-5 (probabilities computed in batches of other sizes)."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 2e-5
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_up_to_float_rounding(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_up_to_float_rounding(x, y) for x, y in zip(a, b))
    return a == b


# Byte for byte: every format and option, where the two runs' batches give the same floats. Chunks change which
# sentences share a batch; on CPU a batch of one or two rows takes another matrix kernel (another summation order), so
# probabilities (n-best, span confidence, marginals) may move in their 6th decimal; tags never did. Batches of one
# sentence (eval_batch_size 1) compute alike in both runs, so JSONL with n-best and marginals is compared byte for byte
# there, and up to float rounding with the default batches.
@pytest.mark.parametrize(
    "source, output, extra, exact",
    [
        ("text", "out.conll", [], True),
        ("conll", "out.conll", [], True),
        ("text", "out.jsonl", ["--n_best", "3", "--marginals", "true", "--data.eval_batch_size", "1"], True),
        ("conll", "out.jsonl", ["--n_best", "2", "--marginals", "true"], False),
        ("text", "out.conll", ["--data.batch_by_document", "true", "--data.eval_batch_size", "3"], True),
        ("conll", "out.conll", ["--data.num_workers", "2"], True),  # chunks 0, 2, 4... and 1, 3, 5... interleaved
    ],
    ids=["text", "conll_gold", "text_jsonl_nbest_marginals", "conll_gold_jsonl_nbest", "text_documents", "workers"],
)
def test_chunks_of_7_write_what_one_chunk_writes(checkpoint, inputs, tmp_path, source, output, extra, exact):
    whole = predict(checkpoint, inputs[source], tmp_path / "whole" / output, WHOLE, *extra)
    streamed = predict(checkpoint, inputs[source], tmp_path / "chunks" / output, 7, *extra)
    if exact:
        assert streamed == whole
    assert list((tmp_path / "chunks").iterdir()) == [tmp_path / "chunks" / output]  # no temporary file left
    # Input order: sentence i of the output is sentence i of the input.
    dm = TaggingDataModule(vocab=str(checkpoint), predict=str(inputs[source]))
    expected = [s["tokens"] for s in dm.predict_sentences()]
    if output.endswith(".jsonl"):
        records = [json.loads(line) for line in streamed.decode().splitlines()]
        assert same_up_to_float_rounding(records, [json.loads(line) for line in whole.decode().splitlines()])
        assert [[t["text"] for t in r["tokens"]] for r in records] == expected
        assert all(r["n_best"][0]["tags"] == r["tags"] for r in records)
        if source == "conll":
            assert all(r["gold_tags"] and len(r["gold_tags"]) == len(r["tags"]) for r in records)
    else:
        blocks = [b.splitlines() for b in streamed.decode().strip("\n").split("\n\n")]
        assert [[line.split()[0] for line in b] for b in blocks] == expected
        assert {len(line.split()) for b in blocks for line in b} == ({3} if source == "conll" else {2})


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_line_after_the_first_chunk_leaves_no_output(checkpoint, tmp_path, workers):
    good = "EU rejects German call .\nPeter lives in Paris\n" * 10
    source = tmp_path / "bad.txt"
    source.write_bytes(good.encode() + b"caf\xe9\n" + good.encode())  # not UTF-8 at line 21, in the third chunk
    output = tmp_path / "out" / "bad.conll"
    # In a DataLoader worker the error is raised again in the main process: the same message, not a traceback.
    with pytest.raises(DataFormatError if workers == 0 else SeqtagInputError) as raised:
        main(["predict", "--debug", "--ckpt_path", str(checkpoint), "--data.predict", str(source),
              "--predict_output", str(output), "--data.predict_chunk_size", "7", "--data.num_workers", str(workers),
              *COMMON])  # fmt: skip
    assert str(raised.value).startswith(f"{source}:21: bytes that are not utf-8 at byte offset 463 of the file")
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


@pytest.mark.slow
def test_ddp_two_processes_write_the_single_process_file(checkpoint, inputs, tmp_path):
    """Chunks of 7: 7 chunks of the raw text, 4 for rank 0 and 3 for rank 1, merged into one file. Both runs are
    `seqtag` processes with one torch thread: the chunks and their batches are the same, so are the floats."""
    outputs = {}
    for name, extra in [("single", []), ("ddp", ["--trainer.strategy=ddp", "--trainer.devices=2"])]:
        outputs[name] = tmp_path / name / "out.jsonl"
        seqtag("predict", "--ckpt_path", checkpoint, "--data.predict", inputs["text"], "--predict_output",
               outputs[name], "--data.predict_chunk_size", 7, "--n_best", 2, "--marginals", "true",
               "--trainer.default_root_dir", tmp_path / name, *extra, *COMMON)  # fmt: skip
    assert outputs["ddp"].read_bytes() == outputs["single"].read_bytes()
    assert list(outputs["ddp"].parent.iterdir()) == [outputs["ddp"]]  # the parts are removed
