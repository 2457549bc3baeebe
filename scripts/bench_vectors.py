"""Load time and memory of word vector files, one format against another, as ``data.word_vectors`` reads them.

The same vectors are written as GloVe text (gzipped and not), word2vec text and word2vec binary (gzipped and not);
a fastText model is trained on the training file (``fasttext`` bindings) and read as its ``.vec`` text and as its
``.bin`` model, by seqtag's reader, the ``fasttext`` bindings and gensim. Each load runs in a fresh process: seconds
for the load alone (imports excluded) and the peak resident memory it adds, first without the ``.npz`` cache, then
from it. Two loads per file, as a fit makes them: the vectors of the training words (``load_vectors_cached``) and
the table of the file's first words kept for words unseen in training (``load_table_cached``).

    python scripts/bench_vectors.py --glove data/embeddings/glove.6B.50d.txt.gz --train data/conll2003/eng.train

``--synthetic-words N`` also writes a fastText model of N words and N buckets (dim 16, random values) in the
``.bin`` format to time the opening of a model with an official model's dictionary size (2,000,000 words).
Files are written under ``--work`` (a temporary folder by default, removed at the end).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run in a fresh process per measurement: imports first, then the resident memory before the load, the load, its
# time and the peak resident memory (Linux: VmHWM, reset after the imports), and the peak of its anonymous part
# (the heap: what is not pages of a memory-mapped file, which the kernel can drop and read again).
CHILD = """
import json, sys, threading, time
import numpy as np
from seqtag.data import fasttext_model, vectors
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
args = json.loads(sys.argv[1])
wanted = args.get("wanted") and open(args["wanted"], encoding="utf-8").read().split("\\n")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident memory (VmHWM): the imports' peak does not count
before, heap_before = status("VmRSS"), status("RssAnon")
heap_peak, done = [heap_before], threading.Event()
def sample():  # the kernel keeps no peak of anonymous memory alone: sample it
    while not done.wait(0.005):
        heap_peak.append(max(heap_peak.pop(), status("RssAnon")))
sampler = threading.Thread(target=sample)
sampler.start()
start = time.perf_counter()
{load}
seconds = time.perf_counter() - start
done.set()
sampler.join()
heap = max(heap_peak[0], status("RssAnon")) - heap_before
peak = status("VmHWM")
print(json.dumps({{"seconds": seconds, "peak_mib": peak, "added_mib": peak - before, "heap_mib": heap, "n": n}}))
"""
LOADS = {
    "training words": "v, dim = vectors.load_vectors_cached(args['path'], wanted); n = len(v)",
    "table": "w, m = vectors.load_table_cached(args['path'], args['keep']); n = len(w)",
    "open .bin (our reader)": "model = fasttext_model.FastTextModel(args['path']); n = len(model.words)",
    "training words, fasttext bindings": (
        "import fasttext\nmodel = fasttext.load_model(args['path'])\n"
        "v = {w: model.get_word_vector(w) for w in wanted}; n = len(v)"
    ),
    "training words, gensim": (
        "from gensim.models.fasttext import load_facebook_vectors\nmodel = load_facebook_vectors(args['path'])\n"
        "v = {w: model[w] for w in wanted}; n = len(v)"
    ),
    "subword table, unseen test words": (
        "import torch\nfrom seqtag.data.vocab import Vocab\n"
        "vocab = Vocab.build([wanted], ['O'])\n"
        "test = open(args['test'], encoding='utf-8').read().split('\\n')\n"
        "table = fasttext_model.SubwordTable(fasttext_model.FastTextModel(args['path']), None)\n"
        "n = table.add(vocab, [test])"
    ),
}


def measure(load: str, path: Path, cache: Path, **args) -> dict:
    env = {**os.environ, "SEQTAG_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    code = CHILD.format(load=LOADS[load])
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"path": str(path), **args})],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def conll_words(path: Path) -> list[str]:
    """The distinct tokens of a CoNLL file (first column), in order of appearance."""
    words: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            token = line.split(" ", 1)[0].strip()
            if token and token != "-DOCSTART-":
                words[token] = None
    return list(words)


def conll_sentences(path: Path) -> list[str]:
    sentences, current = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            token = line.split(" ", 1)[0].strip()
            if not token:
                if current:
                    sentences.append(" ".join(current))
                current = []
            elif token != "-DOCSTART-":
                current.append(token)
    return sentences + ([" ".join(current)] if current else [])


def write_formats(glove: Path, work: Path) -> dict[str, Path]:
    """The GloVe file's vectors as GloVe text (.txt, .txt.gz as given), word2vec text and word2vec binary."""
    words, rows = [], []
    with gzip.open(glove, "rt", encoding="utf-8") if glove.suffix == ".gz" else open(glove, encoding="utf-8") as f:
        for line in f:
            word, _, rest = line.rstrip().partition(" ")
            words.append(word)
            rows.append(rest)
    dim = rows[0].count(" ") + 1
    files = {"GloVe text .txt.gz": glove, "GloVe text .txt": work / "glove.txt", "word2vec text .vec": work / "w2v.vec"}
    files["GloVe text .txt"].write_text("".join(f"{w} {r}\n" for w, r in zip(words, rows)), encoding="utf-8")
    files["word2vec text .vec"].write_text(
        f"{len(words)} {dim}\n" + "".join(f"{w} {r}\n" for w, r in zip(words, rows)), encoding="utf-8"
    )
    matrix = np.array([np.array(r.split(" "), dtype=np.float32) for r in rows])
    binary = bytearray(f"{len(words)} {dim}\n".encode())
    for word, vector in zip(words, matrix):
        binary += word.encode() + b" " + vector.astype("<f4").tobytes() + b"\n"
    files["word2vec binary .bin"] = work / "w2v.bin"
    files["word2vec binary .bin"].write_bytes(bytes(binary))
    files["word2vec binary .bin.gz"] = work / "w2v.bin.gz"
    with gzip.open(files["word2vec binary .bin.gz"], "wb", compresslevel=6) as f:
        f.write(bytes(binary))
    return files


def train_fasttext(train: Path, work: Path, dim: int) -> tuple[Path, Path] | None:
    """A skipgram fastText model of the training file's sentences (fastText's defaults otherwise: words seen 5
    times, n-grams of 3-6 characters in 2,000,000 buckets), and its .vec file as fastText writes it."""
    try:
        import fasttext
    except ImportError:
        print("fasttext bindings not installed: no fastText model (pip install fasttext-wheel)", file=sys.stderr)
        return None
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(conll_sentences(train)) + "\n", encoding="utf-8")
    start = time.perf_counter()
    model = fasttext.train_unsupervised(str(corpus), model="skipgram", dim=dim, thread=1, verbose=0)
    print(f"fastText model trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    binary, vec = work / "fasttext.bin", work / "fasttext.vec"
    model.save_model(str(binary))
    with open(vec, "w", encoding="utf-8") as f:
        f.write(f"{len(model.words)} {model.get_dimension()}\n")
        for word in model.words:
            f.write(word + " " + " ".join(f"{x:.5g}" for x in model.get_word_vector(word)) + "\n")
    return binary, vec


def write_synthetic_fasttext(path: Path, words: int, dim: int = 16, seed: int = 0) -> None:
    """A fastText model file (format version 12) of ``words`` made-up words and as many buckets, random values."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<2i", 793712314, 12))
        f.write(struct.pack("<12id", dim, 5, 5, 5, 5, 1, 2, 2, words, 3, 6, 100, 1e-4))
        f.write(struct.pack("<3iqq", words, words, 0, 10 * words, -1))
        entry = struct.pack("<qb", 10, 0)
        f.write(b"".join(f"w{i:07d}".encode() + b"\0" + entry for i in range(words)))
        f.write(struct.pack("<?qq", False, 2 * words, dim))
        for start in range(0, 2 * words, 1_000_000):
            count = min(1_000_000, 2 * words - start)
            f.write(rng.uniform(-0.1, 0.1, (count, dim)).astype("<f4").tobytes())
        f.write(struct.pack("<?qq", False, words, dim))
        f.write(np.zeros((words, dim), dtype="<f4").tobytes())


def row(name: str, path: Path, load: str, result: dict) -> str:
    if "error" in result:
        return f"| {name} | | {load} | error: {result['error']} | | | |"
    size = path.stat().st_size / 2**20
    return (
        f"| {name} | {size:,.0f} MiB | {load} | {result['n']:,} | {result['seconds']:.2f} s | "
        f"{result['added_mib']:,.0f} MiB | {result['heap_mib']:,.0f} MiB |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glove", type=Path, required=True, help="a GloVe text file (.gz ok)")
    parser.add_argument("--train", type=Path, required=True, help="a CoNLL training file: its words are wanted")
    parser.add_argument("--test", type=Path, help="a CoNLL test file: its words unseen in --train get subwords")
    parser.add_argument("--keep", type=int, default=400_000, help="table size (data.keep_vectors)")
    parser.add_argument("--fasttext-dim", type=int, default=100)
    parser.add_argument("--synthetic-words", type=int, default=0, help="also open a synthetic model this large")
    parser.add_argument("--work", type=Path, help="folder for the files written (default: a temporary one)")
    options = parser.parse_args(argv)

    work = options.work or Path(tempfile.mkdtemp(prefix="bench_vectors_"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = work / "wanted.txt"
    train_words = conll_words(options.train)
    wanted.write_text("\n".join(train_words), encoding="utf-8")
    lines = [
        "| file | size | load | vectors | seconds | peak RSS added | peak heap added |",
        "|---|---|---|---|---|---|---|",
    ]
    try:
        files = write_formats(options.glove, work)
        candidates = [(name, path) for name, path in files.items()]
        fasttext_files = train_fasttext(options.train, work, options.fasttext_dim)
        if fasttext_files is not None:
            candidates += [("fastText .vec", fasttext_files[1]), ("fastText .bin", fasttext_files[0])]
        for name, path in candidates:
            for load in ("training words", "table"):
                cache = work / f"cache-{path.name}-{load.replace(' ', '_')}"
                for label in ("", " (cache)"):
                    args = {"wanted": str(wanted), "keep": options.keep}
                    result = measure(load, path, cache, **args)
                    lines.append(row(name, path, load + label, result))
                    print(lines[-1], file=sys.stderr)
        if fasttext_files is not None:
            binary = fasttext_files[0]
            for load in ("open .bin (our reader)", "training words, fasttext bindings", "training words, gensim"):
                lines.append(
                    row("fastText .bin", binary, load, measure(load, binary, work / "none", wanted=str(wanted)))
                )
                print(lines[-1], file=sys.stderr)
            if options.test is not None:
                test = work / "test_words.txt"
                test.write_text("\n".join(conll_words(options.test)), encoding="utf-8")
                load = "subword table, unseen test words"
                result = measure(load, binary, work / "none", wanted=str(wanted), test=str(test))
                lines.append(row("fastText .bin", binary, load, result))
        if options.synthetic_words:
            synthetic = work / "synthetic.bin"
            write_synthetic_fasttext(synthetic, options.synthetic_words)
            name = f"synthetic fastText .bin ({options.synthetic_words:,} words, dim 16)"
            for load in ("open .bin (our reader)", "table"):
                result = measure(load, synthetic, work / "cache-synthetic", keep=options.keep)
                lines.append(row(name, synthetic, load, result))
    finally:
        if options.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
