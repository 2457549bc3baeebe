"""TaggingDataModule: sources → one schema → training scheme → Arrow-cached ids → bucketed, padded batches.

The vocabulary exists once ``__init__`` returns, so LightningCLI can link ``data.labels``, ``data.vocab_size`` and
``data.num_chars`` into the model before it is built.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader

from seqtag.data import schemes
from seqtag.data.fasttext_model import SubwordTable
from seqtag.data.packed import PackedSplit, passthrough
from seqtag.data.readers import count_columns, iter_sentences, read_dataset, sniff_predict_format
from seqtag.data.sampler import BucketBatchSampler, document_batches, eval_max_tokens
from seqtag.data.token_text import pad_token_codes
from seqtag.data.vectors import embedding_matrix, load_table_cached, load_vectors_cached
from seqtag.data.vocab import PRETRAINED_KEY, Vocab, load_checkpoint, pretrained_words
from seqtag.errors import SeqtagInputError

Split = Literal["train", "validation", "test", "predict"]


def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pads encoded sentences into a batch.

    Shape:
        word_ids, casing_ids, tag_ids: (B, T) long, padded with 0;  char_ids: (B, T, C) long;
        lengths: (B,) long;  index: (B,) long, the sentences' positions in their split;  document: (B,) long,
        each sentence's document (the position of its first sentence);
        feature_ids: (B, T, F) long, only when the rows have ``feature_ids``;
        token_codes: (B, T, L) int32, the tokens' text (:mod:`seqtag.data.token_text`), only when the rows have
        ``tokens``.
    """
    batch_size = len(rows)
    lengths = torch.tensor([len(r["word_ids"]) for r in rows], dtype=torch.long)
    max_len = int(lengths.max())
    max_chars = max(len(c) for r in rows for c in r["char_ids"])
    word_ids = torch.zeros(batch_size, max_len, dtype=torch.long)
    casing_ids = torch.zeros(batch_size, max_len, dtype=torch.long)
    tag_ids = torch.zeros(batch_size, max_len, dtype=torch.long)
    char_ids = torch.zeros(batch_size, max_len, max_chars, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row["word_ids"])
        word_ids[b, :n] = torch.as_tensor(row["word_ids"])
        casing_ids[b, :n] = torch.as_tensor(row["casing_ids"])
        if len(row["tag_ids"]):
            tag_ids[b, :n] = torch.as_tensor(row["tag_ids"])
        for t, chars in enumerate(row["char_ids"]):
            char_ids[b, t, : len(chars)] = torch.as_tensor(chars)
    batch = {
        "word_ids": word_ids,
        "char_ids": char_ids,
        "casing_ids": casing_ids,
        "tag_ids": tag_ids,
        "lengths": lengths,
        "index": torch.tensor([r["index"] for r in rows], dtype=torch.long),
        "document": torch.tensor([r.get("document", r["index"]) for r in rows], dtype=torch.long),
    }
    if "tokens" in rows[0]:
        batch["token_codes"] = pad_token_codes([r["tokens"] for r in rows])
    if "feature_ids" in rows[0]:
        num_features = len(rows[0]["feature_ids"][0])
        feature_ids = torch.zeros(batch_size, max_len, num_features, dtype=torch.long)
        for b, row in enumerate(rows):
            feature_ids[b, : len(row["feature_ids"])] = torch.as_tensor(row["feature_ids"]).view(-1, num_features)
        batch["feature_ids"] = feature_ids
    return batch


class TaggingDataModule(L.LightningDataModule):
    """Data for a tagger: reading, vocabularies, batches.

    Args:
        train: training data: a file (CoNLL, CoNLL-U, JSON, parquet), a ``save_to_disk`` folder or a hub name
            (``owner/name``; ``name:split`` picks a split).
        validation: validation data, same kinds. Default: None
        test: test data. Default: None
        predict: data to tag: any of the above, or plain text with one sentence per line. Default: None
        format: ``auto``, ``conll``, ``conllu``, ``json``, ``parquet``, ``disk`` or ``hub``. Default: ``auto``
        token_column: CoNLL column index or field name of the tokens. Default: column 0 / ``tokens``
        tag_column: CoNLL column index (e.g. -1 for the last), ``upos``/``xpos`` for CoNLL-U, or a field name.
            Default: the last column / UPOS / ``tags``, ``ner_tags``, ``upos``, ``pos_tags``, ``chunk_tags``
        hub_config: configuration name of a hub dataset. Default: None
        feature_columns: columns given to the model as embedded input features, e.g. ``[1]`` for the POS column
            of CoNLL-2000/2003 files: CoNLL column indices, CoNLL-U fields (``lemma``, ``upos``, ``xpos``,
            ``feats``, ``deprel``) or field names. Every split, including data to tag, must have them.
            Default: None
        encoding: text encoding of files. Default: ``utf-8``
        tag_scheme: the data's tag scheme: ``auto`` (detected from train), ``IOB1``, ``IOB2``/``BIO``, ``BIOES``,
            ``BMES``, or ``none`` (labels are plain classes, as in POS tagging). Default: ``auto``
        train_scheme: the scheme the model learns spans in (``same`` keeps the data's); predictions are written
            and scored in the data's scheme. Default: ``BIOES``
        unknown_labels: a validation/test label that training never saw: ``error`` stops with the file's name,
            ``O`` counts it as outside any span (or, for plain classes, as always wrong) with a warning.
            Default: ``error``
        lowercase: look words up lowercased (pair with ``model.casing_dim``). Default: False
        zero_digits: replace digits by 0 before lookup. Default: False
        min_count: training words seen fewer times become UNK. Default: 1
        word_vectors: a GloVe/word2vec/fastText text file (``.gz`` too), a word2vec binary file or a fastText model
            (``.bin``; see docs/vectors.md). Training words with a vector start from it;
            the first ``keep_vectors`` words of the file are kept with the model as a fixed table, so that words
            unseen in training (in dev, test and any text tagged later) keep their vector. With ``vocab`` (tagging
            with a trained model), the table comes from this file instead of the checkpoint. A fastText model gives
            every word a vector: the words of dev, test and data to tag that neither the vocabulary nor the table
            holds join the table with their subword vector. Default: None
        keep_vectors: how many words of ``word_vectors`` (the file's first, which are its most frequent) the model
            keeps for words unseen in training; 0 keeps none (they are UNK). Each costs ``dim`` floats in every
            checkpoint (GloVe 6B 50d: 400,000 words, 80 MB). Default: 400000
        vocab: a ``vocab.json`` saved with a model, or a checkpoint (``.ckpt``), used instead of building one from
            ``train``. Default: None
        validation_from_train: when > 0, the last fraction of ``train`` sentences becomes the validation split
            (for data without a dev set). Default: 0.0
        batch_size: training sentences per batch. Default: 32
        eval_batch_size: sentences per batch in evaluation and prediction. Default: 256
        bucketing: ``exact`` (every batch holds sentences of one length: no padding, no packing, the fastest),
            ``sorted`` (similar lengths) or ``none`` (random batches). Default: ``exact``
        eval_bucketing: the same for evaluation and prediction batches; ``auto`` is ``bucketing`` on CPU and
            ``sorted`` on a GPU, where a few large padded batches beat many exact-length ones (on an H100,
            decoding CoNLL-2003 ``eng.testb`` in batches of 512: 15,000 sentences/s exact, 100,000 sorted).
            Default: ``auto``
        batch_by_document: batches hold whole documents (cut into pieces of ``batch_size`` sentences when
            longer), as a model that looks across the sentences of a document needs (``model.document_memory``).
            Documents come from the data (``-DOCSTART-`` lines, ``# newdoc`` comments, blank lines in text to tag;
            see :mod:`seqtag.data.readers`). Default: None (what the model needs)
        max_length: training sentences longer than this are left out, with a warning that counts them.
            Evaluation and prediction always use full sentences. Default: None (keep all)
        num_workers: DataLoader worker processes. Default: 0
        cache_dir: the ``datasets`` cache folder. Default: the ``datasets`` default
        seed: seed of the batch order. Default: 0
        predict_chunk_size: ``seqtag predict`` reads, encodes and tags its input this many sentences at a time, so
            memory stays flat however long the input is (predictions are written as they come, in input order);
            under DDP each process tags every P-th chunk. Batches are cut within a chunk (for a model reading
            documents, chunks hold whole documents). Default: 10000
    """

    def __init__(
        self,
        train: str | None = None,
        validation: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        format: str = "auto",
        token_column: int | str | None = None,
        tag_column: int | str | None = None,
        hub_config: str | None = None,
        feature_columns: list[int | str] | None = None,
        encoding: str = "utf-8",
        tag_scheme: str = "auto",
        train_scheme: str = "BIOES",
        unknown_labels: Literal["error", "O"] = "error",
        lowercase: bool = False,
        zero_digits: bool = False,
        min_count: int = 1,
        word_vectors: str | None = None,
        keep_vectors: int = 400_000,
        vocab: str | None = None,
        validation_from_train: float = 0.0,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        bucketing: Literal["exact", "sorted", "none"] = "exact",
        eval_bucketing: Literal["auto", "exact", "sorted", "none"] = "auto",
        batch_by_document: bool | None = None,
        max_length: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
        predict_chunk_size: int = 10_000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1 or eval_batch_size < 1:
            raise SeqtagInputError(f"batch_size should be >= 1, got {batch_size} and eval_batch_size {eval_batch_size}")
        if bucketing not in ("exact", "sorted", "none"):
            raise SeqtagInputError(f"bucketing should be one of 'exact', 'sorted', 'none', got {bucketing!r}")
        if eval_bucketing not in ("auto", "exact", "sorted", "none"):
            raise SeqtagInputError(
                f"eval_bucketing should be one of 'auto', 'exact', 'sorted', 'none', got {eval_bucketing!r}"
            )
        if not 0.0 <= validation_from_train < 1.0:
            raise SeqtagInputError(f"validation_from_train should be in [0, 1), got {validation_from_train}")
        if train is None and vocab is None:
            raise SeqtagInputError("data.train (or data.vocab, a vocab.json saved with a model) is required")
        self._raw: dict[str, datasets.Dataset] = {}
        self._encoded: dict[str, datasets.Dataset] = {}
        self._packed: dict[str, tuple[datasets.Dataset, PackedSplit]] = {}  # keyed by the encoded split it packs
        self._pretrained: torch.Tensor | None = None
        self._options: dict[str, dict[str, Any]] = {}  # reading options of the data to tag, sniffed once
        self._table: tuple[list[str], torch.Tensor] | None = None
        self._subwords: SubwordTable | None = None  # with a fastText model as word_vectors
        if predict_chunk_size < 1:
            raise SeqtagInputError(f"predict_chunk_size should be >= 1, got {predict_chunk_size}")
        if keep_vectors < 0:
            raise SeqtagInputError(f"keep_vectors should be >= 0, got {keep_vectors}")
        if vocab is not None:
            self.vocab = Vocab.load(vocab)
            self.data_scheme = self.vocab.data_scheme
            if str(vocab).endswith(".ckpt") and self.vocab.pretrained_words:
                table = load_checkpoint(vocab)[PRETRAINED_KEY]
                self._table = (pretrained_words(table), table["vectors"])
        else:
            self.vocab = self._build_vocab()
        if word_vectors and keep_vectors:
            self._table = self._read_table()
        if self._table is not None:
            self.vocab.attach_pretrained(self._table[0])

    def _read_table(self) -> tuple[list[str], torch.Tensor]:
        """The vectors file's first ``keep_vectors`` words that are not in the vocabulary, and their vectors."""
        words, matrix = load_table_cached(self.hparams.word_vectors, self.hparams.keep_vectors)
        index = self.vocab.word_index
        keep = [j for j, w in enumerate(words) if w not in index]
        table = torch.from_numpy(matrix[keep])
        self._subwords = SubwordTable.for_file(self.hparams.word_vectors, table)
        return [words[j] for j in keep], table

    def pretrained_table(self) -> tuple[list[str], torch.Tensor] | None:
        """(words, (P, dim) vectors) of the pretrained words outside the vocabulary (ids ``vocab_size`` on), or
        None."""
        return self._table

    def _add_subwords(self, sentences: Iterable[Sequence[str]]) -> None:
        """With a fastText model as ``word_vectors``: the words of data to evaluate or tag that neither the
        vocabulary nor the table holds join the table with their subword vector, before the data is encoded."""
        if self._subwords is not None and self._subwords.add(self.vocab, sentences):
            self._table = (list(self.vocab.pretrained_words), self._subwords.table)

    # ----------------------------------------------------------------------------------------------- reading
    def _read(self, split: Split) -> datasets.Dataset:
        if split in self._raw:
            return self._raw[split]
        hp = self.hparams
        source = getattr(hp, split)
        if split == "validation" and source is None and hp.validation_from_train > 0:
            train = self._read_train_full()
            start = len(train) - int(len(train) * hp.validation_from_train)
            self._raw[split] = train.select(range(start, len(train)))
            return self._raw[split]
        if source is None:
            raise SeqtagInputError(f"data.{split} is not set: give a file, folder or hub name")
        options = self._reading_options(split)
        if split == "predict" and options["format"] == "text":
            dataset = datasets.Dataset.from_list(list(self._read_raw_text(source)))
        else:
            dataset = read_dataset(source, **options)
        if split == "train":
            self._train_full = dataset
            if hp.validation_from_train > 0:
                dataset = dataset.select(range(len(dataset) - int(len(dataset) * hp.validation_from_train)))
        self._raw[split] = dataset
        return dataset

    def _reading_options(self, split: Split) -> dict[str, Any]:
        """The options of :func:`~seqtag.data.readers.read_dataset` for ``split``. The data to tag, when
        ``format`` is ``auto``, is sniffed once: plain text or a column file, and whether its columns hold gold
        tags."""
        hp = self.hparams
        if split == "predict" and split in self._options:
            return self._options[split]
        options: dict[str, Any] = {
            "format": hp.format,
            "token_column": hp.token_column,
            "tag_column": hp.tag_column,
            "encoding": hp.encoding,
            "hub_config": hp.hub_config,
            "feature_columns": hp.feature_columns,
            "split": split,
            "cache_dir": hp.cache_dir,
        }
        source = getattr(hp, split)
        if split == "predict":
            options["with_tags"] = False
            if hp.format == "auto" and not source.endswith((".conllu", ".json", ".jsonl", ".parquet")):
                try:
                    # With feature columns, the data to tag can only be a column file.
                    options["format"] = "conll" if hp.feature_columns else sniff_predict_format(source, hp.encoding)
                    # A column file with more than the tokens (and the feature columns) keeps its last column as gold
                    # tags.
                    inputs = 1 + len(hp.feature_columns or [])
                    columns = count_columns(source, hp.encoding)
                    options["with_tags"] = options["format"] == "conll" and columns > inputs
                except SeqtagInputError:
                    return options  # the reader reports the missing file; nothing to keep
            self._options[split] = options
        return options

    def _read_raw_text(self, source: str) -> Iterator[dict[str, Any]]:
        """Raw text to tag, tokenized as the model's training data was (words, or characters for a model trained on
        one-character tokens), with each token's offsets into its line: a generator."""
        from seqtag.data.rawtext import read_raw_text

        return read_raw_text(source, self.hparams.encoding, self.vocab.tokenize_mode)

    def predict_sentences(self) -> Iterator[dict[str, Any]]:
        """The data to tag, read one sentence at a time (nothing is cached): ``tokens``, ``tags`` (gold tags of a
        column file that has them, else empty), ``document``, ``features`` with feature columns, and for raw text
        ``line``, ``text``, ``char_starts`` and ``char_ends``."""
        source = self.hparams.predict
        if source is None:
            raise SeqtagInputError("data.predict is not set: give a file, folder or hub name")
        options = dict(self._reading_options("predict"))
        if options["format"] == "text":
            return self._read_raw_text(source)
        options.pop("cache_dir")
        return iter_sentences(source, **options)

    def _read_train_full(self) -> datasets.Dataset:
        self._read("train")
        return self._train_full

    def _build_vocab(self) -> Vocab:
        hp = self.hparams
        train = self._read("train")
        train_tags = train["tags"]
        if hp.tag_scheme == "auto":
            self.data_scheme = schemes.detect_scheme(train_tags)
        elif hp.tag_scheme.lower() == "none":
            self.data_scheme = None
        else:
            self.data_scheme = schemes.normalize_scheme(hp.tag_scheme)
        if hp.tag_scheme.lower() != "none":
            # A tag that breaks the declared or detected scheme; with none detected, a stray tag in span-like data
            # (X-PER among B-/I- tags), which would otherwise silently make the spans plain classes.
            bad = schemes.find_bad_tag(train_tags, self.data_scheme)
            if bad is not None:
                from seqtag.data.readers import tag_error  # reads the file again to name the line

                names = ("format", "token_column", "tag_column", "encoding", "hub_config", "feature_columns")
                raise tag_error(hp.train, *bad, split="train", **{name: hp[name] for name in names})
        label_set = {t for tags in train_tags for t in tags}
        if self.data_scheme is None:
            labels, train_scheme = sorted(label_set), None
        else:
            train_scheme = self.data_scheme if hp.train_scheme == "same" else schemes.normalize_scheme(hp.train_scheme)
            types = sorted({schemes.split_tag(t)[1] for t in label_set} - {None})
            labels = schemes.labels_for_scheme(types, train_scheme)
        extra: set[str] = set()
        if hp.word_vectors:
            # The vocabulary comes from the training split alone, whatever other splits are given: words of dev, test
            # and new text find their vector in the pretrained table (`keep_vectors`), so a model tags text it has
            # never seen exactly as it tags its dev and test sets.
            probe = Vocab([], [], [], lowercase=hp.lowercase, zero_digits=hp.zero_digits)
            candidates = {probe.normalize(t) for tokens in train["tokens"] for t in tokens}
            vectors, dim = load_vectors_cached(hp.word_vectors, candidates)
            extra = {w for w in candidates if w in vectors or w.lower() in vectors}
            self._vectors, self.word_vectors_dim = vectors, dim
        train_features = train["features"] if hp.feature_columns else ()
        vocab = Vocab.build(
            train["tokens"],
            labels,
            hp.min_count,
            hp.lowercase,
            hp.zero_digits,
            extra,
            train_scheme,
            self.data_scheme,
            train_features,
        )
        return vocab

    # ----------------------------------------------------------------------------------- values for the model
    @property
    def has_validation(self) -> bool:
        return self.hparams.validation is not None or self.hparams.validation_from_train > 0

    @property
    def labels(self) -> list[str]:
        """Labels in the training scheme (what the model predicts)."""
        return list(self.vocab.labels)

    @property
    def scheme(self) -> str | None:
        """The training scheme, None for plain classes."""
        return self.vocab.scheme

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.words)

    @property
    def num_chars(self) -> int:
        return len(self.vocab.chars)

    @property
    def feature_sizes(self) -> list[int]:
        """The number of values (with PAD and UNK) of each feature column; empty without feature columns."""
        return [len(values) for values in self.vocab.features]

    @property
    def has_documents(self) -> bool:
        """Whether the training data marks documents (``-DOCSTART-`` lines, ``# newdoc`` comments, a ``document``
        field): False when every training sentence is a document of its own or the whole split is one, where a
        model reading documents would read unrelated sentences as one text. True without training data (a saved
        vocabulary: the checkpoint's options decide)."""
        if self.hparams.train is None:
            return True
        documents = self._read("train")["document"]
        return 1 < len(set(documents)) < len(documents)

    @property
    def training_vectors(self) -> dict | None:
        """The pretrained vectors (word → array) of the training words, read from ``word_vectors`` while the
        vocabulary was built; None without ``word_vectors`` or with a saved vocabulary."""
        return getattr(self, "_vectors", None)

    def pretrained_embeddings(self) -> torch.Tensor | None:
        """(V, E) float rows for the word vocabulary from ``word_vectors``, or None."""
        if not self.hparams.word_vectors or not hasattr(self, "_vectors"):
            return None
        if self._pretrained is None:
            matrix = embedding_matrix(self.vocab.words, self._vectors, self.word_vectors_dim, self.hparams.seed)
            self._pretrained = torch.from_numpy(matrix)
        return self._pretrained

    # ------------------------------------------------------------------------------------------------ encoding
    def to_training_tags(self, tags: list[str], where: str) -> list[str]:
        """Tags of the data's scheme in the training scheme."""
        if self.vocab.scheme is None or self.vocab.scheme == self.data_scheme:
            return tags
        return schemes.convert(tags, self.data_scheme, self.vocab.scheme)

    def to_data_tags(self, tags: list[str]) -> list[str]:
        """Predicted tags in the training scheme, back in the data's scheme."""
        if self.vocab.scheme is None or self.vocab.scheme == self.data_scheme:
            return tags
        return schemes.convert(tags, self.vocab.scheme, self.data_scheme)

    def _encode_split(self, split: Split) -> datasets.Dataset:
        if split in self._encoded:
            return self._encoded[split]
        raw = self._read(split)
        if split != "train":
            self._add_subwords(raw["tokens"])
        vocab = self.vocab
        hp = self.hparams
        source = getattr(hp, split) or hp.train
        self._check_feature_columns()
        with_features = bool(vocab.features)
        label_index = vocab.label_index
        unknown: set[str] = set()
        if split != "predict" and vocab.scheme is not None:
            bad = schemes.find_bad_tag(raw["tags"], self.data_scheme)
            if bad is not None:
                from seqtag.data.readers import tag_error  # reads the file again to name the line

                sentence, position, problem = bad
                read_split = split
                if getattr(hp, split) is None:  # the validation part of train: its sentences come after the rest
                    sentence += len(self._read_train_full()) - len(raw)
                    read_split = "train"
                names = ("format", "token_column", "tag_column", "encoding", "hub_config", "feature_columns")
                raise tag_error(source, sentence, position, problem, split=read_split, **{n: hp[n] for n in names})
        if split in ("validation", "test"):
            for tags in raw["tags"]:
                unknown.update(t for t in self.to_training_tags(tags, source) if t not in label_index)
            if unknown and hp.unknown_labels == "error":
                raise SeqtagInputError(
                    f"{source}: labels never seen in training: {sorted(unknown)} (set data.unknown_labels=O to count "
                    f"them as outside any span, with a warning)"
                )
            if unknown:
                warnings.warn(
                    f"{source}: labels never seen in training are counted as 'O': {sorted(unknown)}", stacklevel=2
                )
        elif split == "train":
            pass  # training labels define the label set: all are known

        def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            out: dict[str, list] = {
                "word_ids": [],
                "char_ids": [],
                "casing_ids": [],
                "tag_ids": [],
                "index": indices,
                "document": batch["document"],
            }
            if with_features:
                out["feature_ids"] = [vocab.encode_features(features) for features in batch["features"]]
            for tokens, tags in zip(batch["tokens"], batch["tags"]):
                ids = vocab.encode_tokens(tokens)
                for key in ("word_ids", "char_ids", "casing_ids"):
                    out[key].append(ids[key])
                if tags:
                    tags = self.to_training_tags(tags, source)
                    out["tag_ids"].append([label_index.get(t, label_index.get("O", 0)) for t in tags])
                else:
                    out["tag_ids"].append([])
            return out

        encoded = raw.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=raw.column_names,
            desc=f"Encoding {split}",
            # The function closes over this module: name the cache entry ourselves rather than hash it.
            new_fingerprint=self._fingerprint(raw, split),
        )
        if split == "train" and hp.max_length is not None:
            keep = [i for i, ids in enumerate(encoded["word_ids"]) if len(ids) <= hp.max_length]
            dropped = len(encoded) - len(keep)
            if dropped:
                noun = "sentence" if dropped == 1 else "sentences"
                warnings.warn(
                    f"{source}: {dropped} training {noun} longer than max_length={hp.max_length} left out",
                    stacklevel=2,
                )
                encoded = encoded.select(keep)
        self._encoded[split] = encoded
        return encoded

    def _check_feature_columns(self) -> None:
        if len(self.vocab.features) != len(self.hparams.feature_columns or []):
            raise SeqtagInputError(
                f"the model reads {len(self.vocab.features)} feature columns but data.feature_columns is "
                f"{self.hparams.feature_columns}: use the training's data options"
            )

    def _fingerprint(self, raw: datasets.Dataset, split: str) -> str:
        state = json.dumps([raw._fingerprint, split, self.data_scheme, self.vocab.to_dict()], sort_keys=True)
        table = "\n".join(self.vocab.pretrained_words)
        return hashlib.sha256(state.encode() + table.encode()).hexdigest()[:32]

    def setup(self, stage: str | None = None) -> None:
        needed = {
            "fit": ["train", "validation"],
            "validate": ["validation"],
            "test": ["test"],
        }.get(stage or "fit", [])
        for split in needed:
            if split == "validation" and self.hparams.validation is None and self.hparams.validation_from_train == 0:
                continue
            self._encode_split(split)
        if stage == "predict":
            self._check_predict()
            if self._subwords is not None:  # reads the input once more: its words are known before tagging starts
                self._add_subwords(sentence["tokens"] for sentence in self.predict_sentences())

    def _check_predict(self) -> None:
        """Reads the first chunk of the data to tag, which is streamed (see :meth:`predict_dataloader`): a missing
        file, wrong options or a bad line near its start stop ``seqtag predict`` before any tagging. A bad line
        further on stops it when it is read, naming the file and line, and no output is left."""
        self._check_feature_columns()
        for _ in itertools.islice(self.predict_sentences(), self.hparams.predict_chunk_size):
            pass

    def sentences(self, split: Split) -> datasets.Dataset:
        """The split as read (string tokens and tags in the data's scheme)."""
        return self._read(split)

    # ---------------------------------------------------------------------------------------------- batches
    def eval_bucketing(self, device: str | None = None) -> str:
        """The bucketing of evaluation and prediction batches on ``device`` (default: the trainer's, else CPU)."""
        if self.hparams.eval_bucketing != "auto":
            return self.hparams.eval_bucketing
        if device is None:
            device = self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"
        return self.hparams.bucketing if device == "cpu" else "sorted"

    def batch_by_document(self) -> bool:
        """Whether batches hold whole documents: ``batch_by_document``, else what the trainer's model needs."""
        if self.hparams.batch_by_document is not None:
            return self.hparams.batch_by_document
        model = self.trainer.lightning_module if self.trainer is not None else None
        return bool(getattr(model, "reads_documents", False))

    def batch_text(self) -> bool:
        """Whether batches carry the tokens' text (``token_codes``): what the trainer's model needs (a model with
        ``model.transformer``)."""
        model = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        return bool(getattr(model, "reads_token_text", False))

    def _loader(self, split: Split, train: bool) -> DataLoader:
        encoded = self._encode_split(split)
        text = self.batch_text()
        packed = self._packed.get(split)
        if packed is None or packed[0] is not encoded or (text and packed[1].token_codes is None):
            tokens = None
            if text:  # the rows' tokens as read: ``index`` is each row's position in the split read
                read = self._read(split)["tokens"]
                tokens = [read[i] for i in encoded["index"]]
            self._packed[split] = (encoded, PackedSplit(encoded, tokens))
        dataset = self._packed[split][1]
        lengths = dataset.lengths.tolist()
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if not train and 0 < len(dataset) < replicas:
            source = getattr(self.hparams, split) or self.hparams.train
            raise SeqtagInputError(
                f"{source}: {len(dataset)} sentences for {split}, fewer than the {replicas} processes: evaluate or "
                f"tag it with fewer devices"
            )
        sampler = BucketBatchSampler(
            lengths,
            self.hparams.batch_size if train else self.hparams.eval_batch_size,
            shuffle=train,
            num_replicas=replicas,
            rank=rank,
            even=train,
            seed=self.hparams.seed,
            bucketing=self.hparams.bucketing if train else self.eval_bucketing(),
            documents=dataset.document.tolist() if self.batch_by_document() else None,
            # Evaluation batches are also cut by padded tokens, so one very long sentence cannot pad a whole batch.
            max_tokens=None if train else eval_max_tokens(self.hparams.eval_batch_size),
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=passthrough,  # PackedSplit builds whole batches
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            # Its own generator for the workers' base seed: drawing it from the global RNG at each new iterator
            # would shift dropout masks between a resumed run and an uninterrupted one.
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_validation:
            return []
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        """The data to tag, streamed (:class:`~seqtag.data.streaming.PredictStream`): read, encoded and batched
        ``predict_chunk_size`` sentences at a time, so memory does not grow with the input; batches carry their
        sentences as read, for the prediction writer. Under DDP, process r tags chunks r, r + P, r + 2P, ..."""
        from seqtag.data.streaming import PredictStream, chunk_batches, encode_sentence, encode_with_text

        hp = self.hparams
        self._check_feature_columns()
        by_document = self.batch_by_document()
        batches = functools.partial(
            chunk_batches,
            batch_size=hp.eval_batch_size,
            bucketing=self.eval_bucketing(),
            by_document=by_document,
        )
        encode = functools.partial(encode_sentence, self.vocab)
        if self.batch_text():
            encode = functools.partial(encode_with_text, encode)
        trainer = self.trainer
        stream = PredictStream(
            self.predict_sentences,
            encode,
            batches,
            hp.predict_chunk_size,
            document_piece=hp.eval_batch_size if by_document else None,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )
        # batch_size=None: the stream yields whole batches; each worker reads the input and packs its own chunks.
        return DataLoader(stream, batch_size=None, collate_fn=passthrough, num_workers=hp.num_workers)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are built on the CPU: there they are where they belong. Lightning's generic walk over the batch
        # took 0.2 ms a batch.
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        from seqtag.data.streaming import raise_stream_error

        raise_stream_error(batch)  # bad input met by a DataLoader worker streaming the data to tag
        model = self.trainer.lightning_module if self.trainer is not None else None
        if getattr(model, "joins_documents", False):
            from seqtag.modules.encoder import with_document_layout

            # Here, on the CPU, before the batch moves: the encoder on a GPU then reads nothing on the host.
            batch = with_document_layout(batch)
        return batch

    # ------------------------------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = Vocab.from_dict(state_dict["vocab"])
        if saved.labels != self.vocab.labels:
            raise SeqtagInputError(
                f"the checkpoint's labels {saved.labels} differ from the data's {self.vocab.labels}: "
                f"the model was trained on other data (or another scheme)"
            )
        if saved.words != self.vocab.words or saved.chars != self.vocab.chars:
            raise SeqtagInputError(
                "the checkpoint's vocabulary differs from the one built from data.train: use the same training data "
                "and options, or pass data.vocab=<vocab.json saved beside the checkpoint>"
            )


def iter_batches(
    vocab: Vocab,
    sentences: list[list[str]],
    batch_size: int,
    features: list[list[list[str]]] | None = None,
    documents: list[int] | None = None,
    with_text: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of raw token lists for tagging from Python, in length order; ``index`` gives each one's position.

    A batch holds at most ``batch_size`` sentences and, as evaluation batches do, at most
    :func:`seqtag.data.sampler.eval_max_tokens` padded tokens (sentences x longest length): a very long sentence is
    tagged alone.
    ``features``: per sentence, its feature columns (F lists of T values), for a model trained with them.
    ``documents``: per sentence, its document id; batches then hold whole documents, in order (see
    :func:`seqtag.data.sampler.document_batches`).
    ``with_text``: batches also carry the tokens' text as ``token_codes`` (for a model with ``model.transformer``).
    """
    if documents is None:
        lengths = [len(sentence) for sentence in sentences]
        batches = list(
            BucketBatchSampler(
                lengths, batch_size, shuffle=False, bucketing="sorted", max_tokens=eval_max_tokens(batch_size)
            )
        )
    else:
        batches = document_batches(documents, batch_size)
    for indices in batches:
        rows = []
        for i in indices:
            row = vocab.encode_tokens(sentences[i])
            if features is not None:
                row["feature_ids"] = vocab.encode_features(features[i])
            row["tag_ids"] = []
            row["index"] = i
            row["document"] = documents[i] if documents is not None else i
            if with_text:
                row["tokens"] = sentences[i]
            rows.append(row)
        yield collate(rows)
