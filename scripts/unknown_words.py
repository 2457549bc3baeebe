"""Entity recall by how well the model knows the entity's words: all seen in training, some known only from the
pretrained vectors, or some unknown (UNK). Shows where a NER model loses entities it never saw.

    python scripts/unknown_words.py runs/conll2003/checkpoints/best.ckpt data/conll2003/eng.testb
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from seqtag.data import schemes
from seqtag.data.readers import read_conll
from seqtag.tagger import Tagger

KINDS = ("seen in training", "pretrained vector only", "unknown (UNK)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("conll", help="a CoNLL file with gold tags in the last column")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tagger = Tagger.load(args.checkpoint)
    vocab = tagger.vocab
    counts = dict(zip(vocab.words, vocab.word_counts))
    sentences = list(read_conll(args.conll))
    tokens = [s["tokens"] for s in sentences]
    predicted = tagger.tag(tokens, documents=[s["document"] for s in sentences])
    scheme = vocab.data_scheme

    def kind(words: list[str]) -> str:
        normalized = [vocab.normalize(w) for w in words]
        if any(w not in counts for w in normalized):
            return KINDS[2]
        return KINDS[0] if all(counts[w] > 0 for w in normalized) else KINDS[1]

    found, missed, false = Counter(), Counter(), Counter()
    for words, sentence, tags in zip(tokens, sentences, predicted):
        gold = set(schemes.get_spans(sentence["tags"], scheme))
        guessed = set(schemes.get_spans(tags, scheme))
        for label, start, end in gold:
            (found if (label, start, end) in guessed else missed)[kind(words[start:end])] += 1
        for _, start, end in guessed - gold:
            false[kind(words[start:end])] += 1
    print("| entity words | gold entities | recall % | false entities |")
    print("|---|---|---|---|")
    for name in KINDS:
        total = found[name] + missed[name]
        print(f"| {name} | {total} | {100 * found[name] / max(total, 1):.1f} | {false[name]} |")


if __name__ == "__main__":
    main()
