import gzip
import json
import re

import datasets
import pytest

from seqtag.data.diagnose import json_problem
from seqtag.data.readers import (
    count_columns,
    guess_format,
    iter_sentences,
    read_conll,
    read_conllu,
    read_dataset,
    sniff_predict_format,
    tag_error,
    to_dataset_dict,
)
from seqtag.errors import DataFormatError, SeqtagInputError
from tests.conftest import write

CONLL2003 = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

BRUSSELS NNP I-NP I-LOC
"""

CONLLU = """# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tknows\tknow\tVERB\tVBZ\t_\t_\t_\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conll_docstart_and_tail_sentence(tmp_path):
    path = write(tmp_path / "eng.train", CONLL2003)
    sentences = list(read_conll(path))
    assert [s["tokens"] for s in sentences] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn"],
        ["BRUSSELS"],
    ]
    assert sentences[0]["tags"] == ["I-ORG", "O", "I-MISC", "O", "O"]


def test_documents_in_every_format(tmp_path):
    """``document`` is the position of the document's first sentence, whatever marks documents in the source."""
    conll = write(tmp_path / "eng.train", CONLL2003 + "\nParis NNP I-NP I-LOC\n")
    assert [s["document"] for s in read_conll(conll)] == [0, 0, 2, 2]
    # A marker straight after a sentence, without a blank line, still ends it.
    glued = write(tmp_path / "glued.conll", "EU I-ORG\n-DOCSTART- O\nParis I-LOC\n\nRome I-LOC\n")
    assert [(s["tokens"], s["document"]) for s in read_conll(glued)] == [(["EU"], 0), (["Paris"], 1), (["Rome"], 1)]
    conllu = write(
        tmp_path / "a.conllu", "# newdoc id = a\n" + CONLLU + "\n# newdoc id = b\n" + CONLLU.split("\n\n")[1]
    )
    assert [s["document"] for s in read_conllu(conllu)] == [0, 0, 2]
    text = write(tmp_path / "a.txt", "EU rejects it\nIt rains\n\n\nParis\n")
    assert [s["document"] for s in iter_sentences(str(text), format="text")] == [0, 0, 2]
    # Field-based data: -DOCSTART- rows (the hub's conll2003) are skipped and start documents...
    rows = [["-DOCSTART-"], ["EU", "rejects"], ["Peter"], ["-DOCSTART-"], ["Paris"]]
    tags = [["O"], ["B-ORG", "O"], ["B-PER"], ["O"], ["B-LOC"]]
    datasets.Dataset.from_dict({"tokens": rows, "tags": tags}).to_parquet(str(tmp_path / "m.parquet"))
    read = list(iter_sentences(str(tmp_path / "m.parquet")))
    assert [(s["tokens"], s["document"]) for s in read] == [(["EU", "rejects"], 0), (["Peter"], 0), (["Paris"], 2)]
    # ... and a document field numbers them (a new value starts a document), as to_dataset_dict saves them.
    saved = to_dataset_dict({"train": read_dataset(str(tmp_path / "m.parquet"), cache_dir=str(tmp_path / "c"))})
    saved.save_to_disk(str(tmp_path / "saved"))
    assert [s["document"] for s in iter_sentences(str(tmp_path / "saved"))] == [0, 0, 2]
    fields = {"tokens": [["a"], ["b"], ["c"]], "tags": [["O"]] * 3, "document": [7, 7, 3]}
    datasets.Dataset.from_dict(fields).to_parquet(str(tmp_path / "f.parquet"))
    assert [s["document"] for s in iter_sentences(str(tmp_path / "f.parquet"))] == [0, 0, 2]


def test_conll_choose_columns_tab_and_gzip(tmp_path):
    path = tmp_path / "pos.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("EU\tNNP\tB-ORG\nrejects\tVBZ\tO\n")
    (sentence,) = read_conll(path, token_column=0, tag_column=1)
    assert sentence == {"tokens": ["EU", "rejects"], "tags": ["NNP", "VBZ"], "document": 0}


def test_conll_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "train.conll", "EU NNP I-NP I-ORG\nrejects VBZ O\n")
    with pytest.raises(DataFormatError, match=r"train.conll:2: expected 4 columns, got 3: 'rejects VBZ O'"):
        list(read_conll(path))


def test_conll_missing_tag_column(tmp_path):
    path = write(tmp_path / "train.conll", "EU I-ORG\n")
    with pytest.raises(DataFormatError, match="tag_column=5 does not exist: the file has 2 columns"):
        list(read_conll(path, tag_column=5))


def test_conll_empty_and_blank_files(tmp_path):
    for text in ("", "\n\n  \n"):
        path = write(tmp_path / "empty.conll", text)
        with pytest.raises(DataFormatError, match="no sentence found"):
            list(read_conll(path))


def test_conll_crlf_bom_and_zero_width(tmp_path):
    path = tmp_path / "crlf.conll"
    path.write_bytes("\ufeffEU B-ORG\r\nzero\u200bwidth O\r\n\r\n".encode())
    (sentence,) = read_conll(path)
    assert sentence == {"tokens": ["EU", "zero\u200bwidth"], "tags": ["B-ORG", "O"], "document": 0}


def test_conll_bad_bytes_give_offset(tmp_path):
    path = tmp_path / "latin.conll"
    path.write_bytes(b"EU B-ORG\ncaf\xe9 O\n")
    with pytest.raises(DataFormatError, match=r"latin.conll:2: bytes that are not utf-8 at byte offset 12"):
        list(read_conll(path))
    (sentence,) = read_conll(path, encoding="latin-1")
    assert sentence["tokens"] == ["EU", "café"]


def test_missing_file(tmp_path):
    with pytest.raises(SeqtagInputError, match="no such file"):
        list(read_conll(tmp_path / "nope.conll"))
    with pytest.raises(SeqtagInputError, match="no such file or folder"):
        guess_format(str(tmp_path / "nope.conll"))


def test_conllu_skips_ranges_and_empty_nodes(tmp_path):
    path = write(tmp_path / "ewt.conllu", CONLLU)
    sentences = list(read_conllu(path))
    assert sentences[0]["tokens"] == ["I", "do", "n't", "know", "."]
    assert sentences[0]["tags"] == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert list(read_conllu(path, "xpos"))[0]["tags"] == ["PRP", "VBP", "RB", "VB", "."]
    assert sentences[1] == {"tokens": ["Yes"], "tags": ["INTJ"], "document": 0}


def test_conllu_bad_row(tmp_path):
    path = write(tmp_path / "bad.conllu", "1\tI\tI\tPRON\n")
    with pytest.raises(DataFormatError, match=r"bad.conllu:1: expected 10 TAB-separated columns, got 4"):
        list(read_conllu(path))


def test_json_parquet_and_disk_share_the_schema(tmp_path):
    rows = [{"tokens": ["EU", "rejects"], "ner_tags": [3, 0]}, {"tokens": ["Peter"], "ner_tags": [1]}]
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER", "B-ORG"])),
        }
    )
    dataset = datasets.Dataset.from_list(rows, features=features)
    # Without a document field or -DOCSTART- rows, every row is a document of its own.
    expected = [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"], "document": 0},
        {"tokens": ["Peter"], "tags": ["B-PER"], "document": 1},
    ]
    # ClassLabel names are kept
    dataset.save_to_disk(str(tmp_path / "disk"))
    assert list(iter_sentences(str(tmp_path / "disk"))) == expected
    datasets.DatasetDict({"train": dataset, "test": dataset}).save_to_disk(str(tmp_path / "dict"))
    assert list(iter_sentences(str(tmp_path / "dict"), split="test")) == expected
    assert list(iter_sentences(str(tmp_path / "dict") + ":train")) == expected
    dataset.to_parquet(str(tmp_path / "train.parquet"))
    assert list(iter_sentences(str(tmp_path / "train.parquet"))) == expected
    json_path = tmp_path / "train.jsonl"
    json_path.write_text(
        "\n".join(json.dumps({"words": r["tokens"], "tags": t["tags"]}) for r, t in zip(rows, expected))
    )
    assert list(iter_sentences(str(json_path))) == expected


def test_hub_path_with_a_local_dataset_repository(tmp_path):
    """A hub name goes through datasets.load_dataset; a local folder laid out like a hub repository stands in."""
    repo = tmp_path / "owner" / "conll"
    repo.mkdir(parents=True)
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-LOC", "I-LOC"])),
        }
    )
    for split in ("train", "validation"):
        datasets.Dataset.from_list([{"tokens": ["in", "Paris"], "ner_tags": [0, 1]}], features=features).to_parquet(
            str(repo / f"{split}.parquet")
        )
    sentences = list(iter_sentences(str(repo), format="hub", split="validation"))
    assert sentences == [{"tokens": ["in", "Paris"], "tags": ["O", "B-LOC"], "document": 0}]
    with pytest.raises(SeqtagInputError, match="cannot load split 'test' from the Hugging Face hub"):
        list(iter_sentences(str(repo), format="hub", split="test"))


def test_hub_name_is_recognised():
    assert guess_format("eriktks/conll2003") == "hub"


def test_read_dataset_caches_and_sees_file_changes(tmp_path):
    path = write(tmp_path / "train.conll", "EU B-ORG\n")
    assert read_dataset(str(path), cache_dir=str(tmp_path / "cache"))["tokens"] == [["EU"]]
    write(path, "UN B-ORG\n\nParis B-LOC\n")
    ds = read_dataset(str(path), cache_dir=str(tmp_path / "cache"))
    assert ds["tokens"] == [["UN"], ["Paris"]]
    bad = write(tmp_path / "bad.conll", "EU B-ORG\nrejects\n")
    with pytest.raises(DataFormatError, match="bad.conll:2"):
        read_dataset(str(bad), cache_dir=str(tmp_path / "cache"))


def test_to_dataset_dict_types_tags_as_classlabel(tmp_path):
    path = write(tmp_path / "train.conll", "EU B-ORG\nsays O\n")
    dd = to_dataset_dict({"train": read_dataset(str(path), cache_dir=str(tmp_path / "c"))})
    assert dd["train"].features["tags"].feature.names == ["O", "B-ORG"]
    assert dd["train"][0]["tags"] == [1, 0]


def test_predict_format_sniffing(tmp_path):
    assert sniff_predict_format(write(tmp_path / "a.txt", "EU rejects German call .\nPeter wins\n")) == "text"
    conll = write(tmp_path / "b.txt", "EU B-ORG\nrejects O\n\nPeter B-PER\n")
    assert sniff_predict_format(conll) == "conll"
    assert count_columns(conll) == 2
    long = write(tmp_path / "long.txt", "john\n" * 3000 + "\nmary\n")  # a sentence longer than the lines sniffed
    assert sniff_predict_format(long) == "conll"
    assert sniff_predict_format(write(tmp_path / "words.txt", "john\n" * 3000)) == "text"
    assert sniff_predict_format(write(tmp_path / "mixed.txt", "john\n" * 3000 + "mary saw\n\n")) == "text"


def test_real_conll2003_and_ewt_counts(shared_data):
    train = list(read_conll(shared_data / "conll2003" / "eng.testb"))
    assert len(train) == 3453 and sum(len(s["tokens"]) for s in train) == 46435
    dev = list(read_conllu(shared_data / "ud_english_ewt" / "en_ewt-ud-dev.conllu"))
    assert len(dev) == 2001 and sum(len(s["tokens"]) for s in dev) == 25147
    chunks = list(read_conll(shared_data / "conll2000" / "test.txt"))
    assert len(chunks) == 2012 and sum(len(s["tokens"]) for s in chunks) == 47377


def test_conll_of_document_markers_only(tmp_path):
    path = write(tmp_path / "docs.conll", "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n")
    with pytest.raises(DataFormatError, match=r"docs.conll: no sentences: the file holds only -DOCSTART- lines"):
        list(read_conll(path))


def test_tag_error_names_the_line_in_every_line_format(tmp_path):
    conll = write(tmp_path / "a.conll", CONLL2003)
    # Sentence 1 (from 0) is "Peter Blackburn", on lines 9-10 after a document marker and a blank line.
    assert str(tag_error(str(conll), 1, 1, "bad")) == f"{conll}:10: bad"
    conllu = write(tmp_path / "a.conllu", CONLLU)
    # Token 2 of sentence 0 is "n't": line 6, after the comments and the range 2-3.
    assert str(tag_error(str(conllu), 0, 2, "bad")) == f"{conllu}:6: bad"
    assert str(tag_error(str(conllu), 1, 0, "bad", tag_column="xpos")) == f"{conllu}:11: bad"
    jsonl = write(
        tmp_path / "a.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n\n{"tokens": ["b", "c"], "tags": ["O", "O"]}\n'
    )
    assert str(tag_error(str(jsonl), 1, 1, "bad")) == f"{jsonl}:3: token 2 ('c'): bad"
    array = write(tmp_path / "a.json", json.dumps([{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["b"], "tags": ["O"]}]))
    assert str(tag_error(str(array), 1, 0, "bad")) == f"{array}: row 1 (from 0), token 1 ('b'): bad"
    assert str(tag_error(str(conll), 9, 0, "bad")) == f"{conll}: sentence 10: bad"  # past the end: no line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}\n{"a": 2,}\n', r":2: invalid JSON: Expecting property name enclosed in double quotes at column 9"),
        ('{"a": 1}\n{"a": [1, 2\n', r":2: invalid JSON: Expecting ',' delimiter at column 12 \(the file ends there"),
        ('[\n  {"a": 1},\n  {"a": 2}\n  {"a": 3}\n]\n', r":4: invalid JSON: Expecting ',' delimiter at column 3: "),
        ("", r": no sentence found \(the file is empty"),
        ("[]", r": no sentence found \(the file holds only \[\]\)"),
        ("{\n}\n", r": no sentence found \(the file holds only \{\}\)"),
    ],
)
def test_json_problem_gives_line_and_column(tmp_path, text, expected):
    path = write(tmp_path / "f.json", text)
    error = json_problem(path, enumerate(text.splitlines(), start=1), ValueError("from datasets"))
    assert re.match(re.escape(str(path)) + expected, str(error)), str(error)


def test_json_problem_of_valid_json_gives_the_cause(tmp_path):
    path = write(tmp_path / "f.json", '"just a string"')
    outer = RuntimeError("An error occurred while generating the dataset")
    outer.__cause__ = ValueError("the cause")
    error = json_problem(path, [(1, '"just a string"')], outer)
    assert str(error).startswith(f"{path}: cannot read the JSON as rows of tokens and tags")
    assert str(error).endswith(": the cause")
