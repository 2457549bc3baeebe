"""How closely seqtag.tokenize reproduces the CoNLL-2003 tokenization, and its speed.

Each eng.testb sentence is turned back into raw text: tokens joined by single spaces, except that punctuation is
glued the way raw text writes it (no space before ``. , ; : ! ? ) ] } %`` and clitics ``n't 's 're ...``, none after
``( [ { $``, straight double quotes alternate between opening and closing). The text is tokenized and the script
prints the fraction of sentences whose tokens come back identical (and of those also kept as one sentence), the
speed on eng.train joined with plain spaces (one paragraph per sentence), and, given a UD English EWT file, the
precision and recall of the sentence boundaries inside its paragraphs (sentences joined by a space).

    python scripts/tokenizer_agreement.py ../shared/data/conll2003/eng.testb \
        --train ../shared/data/conll2003/eng.train --ewt ../shared/data/ud_english_ewt/en_ewt-ud-test.conllu
"""

from __future__ import annotations

import argparse
import difflib
import time

from seqtag.data.readers import read_conll
from seqtag.tokenize import tokenize

# No space before these tokens in raw text (compared in lower case for the clitics: 'S 'RE ...).
GLUE_LEFT = {".", ",", ";", ":", "!", "?", ")", "]", "}", "%", "'", "n't", "'s", "'re", "'m", "'ve", "'ll", "'d"}
GLUE_RIGHT = {"(", "[", "{", "$"}  # no space after these


def raw_text(tokens: list[str]) -> str:
    """The sentence as raw text would write it (see the module docstring)."""
    out, glue_next, quote_open = "", False, False
    for i, tok in enumerate(tokens):
        # Two single quotes in a row are two quotes (nested ones closing), not the Treebank '' token.
        space = bool(out) and not glue_next and tok.lower() not in GLUE_LEFT or (tok == "'" and out.endswith("'"))
        if tok == '"':
            # A quote that ends the sentence closes one opened sentences before (CoNLL splits long quotations).
            quote_open = quote_open or (i == len(tokens) - 1 and i > 0)
            space = space and not quote_open  # a closing quote sticks to the word before
            glue_next = not quote_open  # an opening quote sticks to the word after
            quote_open = not quote_open
        else:
            glue_next = tok in GLUE_RIGHT
        out += (" " if space else "") + tok
    return out


def ewt_paragraphs(path: str) -> list[tuple[str, set[int]]]:
    """Each paragraph of a CoNLL-U file as (its sentences joined by a space, the offsets where a sentence ends)."""
    paragraphs: list[list[str]] = []
    for line in open(path, encoding="utf-8"):
        if line.startswith(("# newpar", "# newdoc")) or not paragraphs:
            paragraphs.append([])
        if line.startswith("# text = "):
            paragraphs[-1].append(line[len("# text = ") :].strip())
    out = []
    for sentences in filter(None, paragraphs):
        ends = {len(" ".join(sentences[: i + 1])) for i in range(len(sentences) - 1)}
        out.append((" ".join(sentences), ends))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("conll", help="CoNLL-2003 eng.testb (or any CoNLL file with tokens in the first column)")
    parser.add_argument("--train", help="a CoNLL file to time the tokenizer on (eng.train)")
    parser.add_argument("--ewt", help="a UD English EWT .conllu file for the sentence boundaries")
    parser.add_argument("--show", type=int, default=10, help="print this many disagreements")
    args = parser.parse_args()

    sentences = [s["tokens"] for s in read_conll(args.conll, tag_column=None)]
    same = one_sentence = 0
    differences = []
    start = time.perf_counter()
    for gold in sentences:
        out = tokenize(raw_text(gold))
        tokens = [t.text for sentence in out for t in sentence]
        if tokens == gold:
            same += 1
            one_sentence += len(out) == 1
        else:
            ops = difflib.SequenceMatcher(a=gold, b=tokens, autojunk=False).get_opcodes()
            differences.append([(gold[i1:i2], tokens[j1:j2]) for op, i1, i2, j1, j2 in ops if op != "equal"])
    seconds = time.perf_counter() - start
    n = len(sentences)
    print(f"{args.conll}: {n} sentences, tokens identical {same / n:.4f} ({same}), and as one sentence "
          f"{one_sentence / n:.4f}; {sum(map(len, sentences)) / seconds:,.0f} tokens/s")  # fmt: skip
    for diff in differences[: args.show]:
        print("  gold → ours:", "; ".join(f"{' '.join(g)!r} → {' '.join(o)!r}" for g, o in diff[:3]))

    if args.train:
        text = "\n\n".join(" ".join(s["tokens"]) for s in read_conll(args.train, tag_column=None))
        start = time.perf_counter()
        count = sum(len(s) for s in tokenize(text))
        print(f"{args.train} joined with spaces: {count:,} tokens at {count / (time.perf_counter() - start):,.0f}/s")

    if args.ewt:
        found = true = predicted = 0
        for text, ends in ewt_paragraphs(args.ewt):
            ours = {s[-1].char_end for s in tokenize(text)[:-1]}
            found, true, predicted = found + len(ours & ends), true + len(ends), predicted + len(ours)
        print(f"{args.ewt}: sentence ends inside paragraphs: precision {found / predicted:.3f}, "
              f"recall {found / true:.3f} ({true} ends)")  # fmt: skip


if __name__ == "__main__":
    main()
