"""Trained taggers as Hugging Face Hub model folders: write one, load one (from disk or the Hub), push one.

A folder holds, with no pickle anywhere (tensors in safetensors, everything else JSON or text):

- ``model.safetensors``: the model's ``state_dict``, plus the pretrained vector table for words unseen in training
  under the name ``seqtag_pretrained.vectors`` ((P, E) float32), when the model keeps one;
- ``config.json``: ``library_name``, ``seqtag_version``, ``format`` (this layout's version), ``model`` (the
  hyperparameters :class:`~seqtag.tagger.Tagger` is built from, without optimizer and scheduler; character LMs as
  the spec dicts whose weights are in the state_dict), ``data`` (the training data's options: paths or hub names,
  how to read files), ``pretrained_words`` (P), ``test_results`` (the scores of ``seqtag test``, when known);
- ``vocab.json``: the vocabulary (:class:`~seqtag.data.vocab.Vocab`, as saved beside checkpoints);
- ``pretrained_words.txt``: the words of the pretrained table, one per line, row ``j`` of the table on line ``j + 1``;
- ``README.md``: the model card, with Hub metadata (``library_name: seqtag``, ``pipeline_tag:
  token-classification``, tags, language, datasets, and ``model-index`` scores when the test data is a hub dataset).

A folder and a checkpoint convert both ways through the same checkpoint dict (what ``torch.load`` gives for a
``best.ckpt``): :func:`checkpoint_from_folder` and :func:`save_checkpoint_dict`. ``Tagger.from_pretrained`` builds
the model from that dict with ``Tagger.from_checkpoint``, as ``Tagger.load`` does from a file, so both tag alike;
``seqtag predict --model`` writes it as a Lightning checkpoint (:func:`checkpoint_file`) and runs the ``--ckpt_path``
path.

``huggingface_hub.ModelHubMixin`` was weighed and not used: it rebuilds a model from its ``__init__`` arguments alone,
while a tagger also needs its vocabulary and pretrained table (data, not arguments), and the card's content (training
data, test scores) lives in the checkpoint and beside it, not on the model; it would also add its own
``save_pretrained``/``from_pretrained`` signatures to a LightningModule whose hyperparameters include optimizer
callables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqtag import __version__
from seqtag.atomic import atomic_open, atomic_write_text
from seqtag.data.vocab import CHECKPOINT_KEY as VOCAB_KEY
from seqtag.data.vocab import PRETRAINED_KEY, pretrained_words
from seqtag.errors import SeqtagInputError
from seqtag.modules.contextual import SPECS_KEY as CHAR_LM_KEY
from seqtag.modules.transformer import SPEC_KEY as TRANSFORMER_KEY
from seqtag.network import TRAINING_ONLY_WEIGHTS  # a folder is for tagging, so it leaves them out

if TYPE_CHECKING:
    import torch

    from seqtag.tagger import Tagger

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.json"
PRETRAINED_WORDS_NAME = "pretrained_words.txt"
CARD_NAME = "README.md"
# The pretrained table's tensor in model.safetensors; no module of the tagger has this name.
PRETRAINED_TENSOR = "seqtag_pretrained.vectors"
FORMAT_VERSION = 1
# The files a model needs (the card is for people): what is downloaded from the Hub.
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, PRETRAINED_WORDS_NAME)
# Checkpoint hyperparameters that are not the model's: training-only factories and LightningCLI's bookkeeping.
NOT_MODEL = ("optimizer", "lr_scheduler", "_instantiator", "_class_path")
# Data options not worth publishing: local working files and machine settings.
NOT_DATA = ("_instantiator", "_class_path", "vocab", "predict", "cache_dir", "num_workers")
# owner/name, optionally @revision; a name like this that is no file or folder is taken for a Hub model.
REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w./-]+))?$")


# ------------------------------------------------------------------------------------------------------ plain data
def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data (dicts with str keys, lists, str, numbers, bools, None), or an input error."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise SeqtagInputError(f"{where} = {value!r} cannot be written to {CONFIG_NAME}: not plain data")


def model_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The model's hyperparameters from a checkpoint dict, as plain data; each character LM is its spec dict (its
    weights are in the state_dict) instead of the LM checkpoint's path."""
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in NOT_MODEL}
    for direction, spec in checkpoint.get(CHAR_LM_KEY, {}).items():
        hparams[f"char_lm_{direction}"] = spec
    if TRANSFORMER_KEY in checkpoint:  # the encoder's config and tokenizer files (its weights are in the state_dict)
        hparams["transformer"] = checkpoint[TRANSFORMER_KEY]
    if hparams.get("lm_weight"):
        hparams["lm_weight"] = 0.0  # its heads are TRAINING_ONLY_WEIGHTS: the folder's model is built without them
    return _plain(hparams, "model")


def data_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The training data's options from a checkpoint dict (``datamodule_hyper_parameters``), as plain data."""
    saved = checkpoint.get("datamodule_hyper_parameters") or {}
    return _plain({k: v for k, v in saved.items() if k not in NOT_DATA}, "data")


def read_test_results(checkpoint_path: str | Path) -> dict[str, Any] | None:
    """The scores ``seqtag test`` wrote beside a checkpoint (``test_report.json``), without the confusion matrix;
    None when there is no report."""
    from seqtag.report import REPORT_JSON

    report = Path(checkpoint_path).parent / REPORT_JSON
    if not report.is_file():
        return None
    try:
        results = json.loads(report.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SeqtagInputError(f"{report}:{err.lineno}: not a seqtag test report: {err.msg}") from None
    return {k: v for k, v in results.items() if k != "confusion"}


# ------------------------------------------------------------------------------------------------------- writing
def tagger_checkpoint(tagger: Tagger) -> dict[str, Any]:
    """The checkpoint dict of a model in memory: its hyperparameters and weights, and what its
    ``on_save_checkpoint`` adds (vocabulary, pretrained table, character LM specs), as in a ``best.ckpt``."""
    if tagger.vocab is None:
        raise SeqtagInputError("the tagger has no vocabulary: load it with Tagger.load(checkpoint)")
    origin = getattr(tagger, "origin", None) or {}
    checkpoint: dict[str, Any] = {
        "state_dict": tagger.state_dict(),
        "hyper_parameters": dict(tagger.hparams),
        "datamodule_hyper_parameters": origin.get("data") or {},
    }
    tagger.on_save_checkpoint(checkpoint)
    return checkpoint


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no memory (safetensors refuses shared storage)."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(pointer)
        tensors[name] = tensor
    return tensors


def save_checkpoint_dict(
    checkpoint: dict[str, Any],
    folder: str | Path,
    *,
    test_results: dict[str, Any] | None = None,
    repo_id: str | None = None,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
) -> Path:
    """Writes a checkpoint dict (``best.ckpt``'s contents, or :func:`tagger_checkpoint`) as a Hub model folder.

    Args:
        checkpoint: ``state_dict``, ``hyper_parameters``, the vocabulary and optionally the pretrained table,
            character LM specs and ``datamodule_hyper_parameters``.
        folder: the folder to write (created; files of the same names are replaced).
        test_results: scores for the card and ``config.json`` (see :func:`read_test_results`). Default: none
        repo_id: the Hub name the card's usage snippet loads. Default: the folder's path
        language: the language code(s) of the training text, for the card's metadata. Default: omitted
        tags: tags for the card besides seqtag's own. Default: none

    Returns:
        The folder.
    """
    from seqtag.hub_card import model_card

    if VOCAB_KEY not in checkpoint or "hyper_parameters" not in checkpoint:
        raise SeqtagInputError("not a seqtag tagger checkpoint: no vocabulary or hyperparameters")
    # State a model keeps beside its weights that this layout does not carry: a folder without it would not load.
    known = (VOCAB_KEY, PRETRAINED_KEY, CHAR_LM_KEY, TRANSFORMER_KEY)  # the last two go into the model's options
    unknown = sorted(k for k in checkpoint if k.startswith("seqtag_") and k not in known)
    if unknown:
        raise SeqtagInputError(f"the checkpoint holds {unknown}, which a model folder (format {FORMAT_VERSION}) lacks")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(TRAINING_ONLY_WEIGHTS)}
    table = checkpoint.get(PRETRAINED_KEY)
    words = pretrained_words(table) if table else []
    if table:
        if len(words) != table["vectors"].shape[0]:
            raise SeqtagInputError(
                f"the pretrained table has {table['vectors'].shape[0]} vectors for {len(words)} words"
            )
        if any("\n" in w or "\r" in w for w in words):
            raise SeqtagInputError(f"a pretrained word holds a line break; {PRETRAINED_WORDS_NAME} keeps one a line")
        tensors[PRETRAINED_TENSOR] = table["vectors"]
    config = {
        "library_name": "seqtag",
        "seqtag_version": __version__,
        "format": FORMAT_VERSION,
        "model": model_config(checkpoint),
        "data": data_config(checkpoint),
        "pretrained_words": len(words),
        "test_results": _plain(test_results, "test_results") if test_results else None,
    }
    with atomic_open(folder / WEIGHTS_NAME, "wb") as f:
        f.write(_safetensors_bytes(_tensors(tensors)))
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    atomic_write_text(folder / VOCAB_NAME, json.dumps(checkpoint[VOCAB_KEY], ensure_ascii=False))
    if words:
        with atomic_open(folder / PRETRAINED_WORDS_NAME, "wb") as f:
            f.write(("\n".join(words) + "\n").encode("utf-8"))
    else:
        (folder / PRETRAINED_WORDS_NAME).unlink(missing_ok=True)  # a stale list would not match the weights
    card = model_card(config, checkpoint[VOCAB_KEY], repo_id or str(folder), language, tags)
    atomic_write_text(folder / CARD_NAME, card)
    return folder


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    # One metadata entry: safetensors writes several in no fixed order, and the same model should give the same bytes
    # (an unchanged file is no change in a Hub commit).
    return save(tensors, metadata={"format": "pt"})


def save_checkpoint_file(
    checkpoint_path: str | Path,
    folder: str | Path,
    *,
    repo_id: str | None = None,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
) -> Path:
    """A checkpoint file (``best.ckpt``) as a Hub model folder, with the scores of the ``test_report.json`` beside
    it when ``seqtag test`` wrote one. See :func:`save_checkpoint_dict`."""
    from seqtag.data.vocab import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    if VOCAB_KEY not in checkpoint:
        raise SeqtagInputError(f"{checkpoint_path}: holds no seqtag vocabulary (not a seqtag tagger checkpoint?)")
    return save_checkpoint_dict(
        checkpoint,
        folder,
        test_results=read_test_results(checkpoint_path),
        repo_id=repo_id,
        language=language,
        tags=tags,
    )


def save_pretrained(
    tagger: Tagger,
    folder: str | Path,
    *,
    repo_id: str | None = None,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
) -> Path:
    """A model in memory as a Hub model folder (``Tagger.save_pretrained``). The card names the training data and
    the test scores when the model knows them: loaded with ``Tagger.load`` (the checkpoint's data options and the
    ``test_report.json`` beside it) or ``Tagger.from_pretrained`` (those of its folder)."""
    origin = getattr(tagger, "origin", None) or {}
    results = origin.get("test_results")
    if results is None and origin.get("checkpoint"):
        results = read_test_results(origin["checkpoint"])
    checkpoint = tagger_checkpoint(tagger)
    return save_checkpoint_dict(checkpoint, folder, test_results=results, repo_id=repo_id, language=language, tags=tags)


# ------------------------------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SeqtagInputError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None


def checkpoint_from_folder(folder: str | Path) -> dict[str, Any]:
    """The checkpoint dict a Hub model folder stands for (as ``torch.load`` gives a ``best.ckpt``): ``state_dict``,
    ``hyper_parameters``, ``datamodule_hyper_parameters``, the vocabulary, the pretrained table and the character LM
    specs; read from safetensors and JSON only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME):
        if not (folder / name).is_file():
            raise SeqtagInputError(
                f"{folder}: {name} is missing (a seqtag model folder holds {CONFIG_NAME}, {WEIGHTS_NAME} and "
                f"{VOCAB_NAME}; `seqtag hub save` writes one)"
            )
    config = _read_json(folder / CONFIG_NAME)
    if not isinstance(config, dict) or config.get("library_name") != "seqtag" or "model" not in config:
        raise SeqtagInputError(f"{folder / CONFIG_NAME}: not a seqtag model config (library_name should be 'seqtag')")
    if int(config.get("format", 0)) > FORMAT_VERSION:
        raise SeqtagInputError(
            f"{folder / CONFIG_NAME}: format {config['format']} was written by seqtag {config.get('seqtag_version')}; "
            f"this seqtag ({__version__}) reads format {FORMAT_VERSION}: upgrade seqtag"
        )
    try:
        tensors = load_file(folder / WEIGHTS_NAME)
    except (SafetensorError, OSError, ValueError) as err:
        raise SeqtagInputError(f"{folder / WEIGHTS_NAME}: not a readable safetensors file: {err}") from None
    model = dict(config["model"])
    checkpoint: dict[str, Any] = {
        "hyper_parameters": model,
        "datamodule_hyper_parameters": dict(config.get("data") or {}),
        VOCAB_KEY: _read_json(folder / VOCAB_NAME),
    }
    specs = {d: model[f"char_lm_{d}"] for d in ("forward", "backward") if isinstance(model.get(f"char_lm_{d}"), dict)}
    if specs:
        checkpoint[CHAR_LM_KEY] = specs
    vectors = tensors.pop(PRETRAINED_TENSOR, None)
    expected = int(config.get("pretrained_words") or 0)
    if expected or vectors is not None:
        words_file = folder / PRETRAINED_WORDS_NAME
        if vectors is None or not words_file.is_file():
            raise SeqtagInputError(
                f"{folder}: {CONFIG_NAME} gives {expected} pretrained words, but {WEIGHTS_NAME} holds "
                f"{'no' if vectors is None else vectors.shape[0]} vectors and {PRETRAINED_WORDS_NAME} "
                f"{'exists' if words_file.is_file() else 'is missing'}"
            )
        text = words_file.read_bytes().decode("utf-8")
        words = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
        if len(words) != vectors.shape[0] or len(words) != expected:
            raise SeqtagInputError(
                f"{words_file}: {len(words)} words, but {WEIGHTS_NAME} holds {vectors.shape[0]} vectors and "
                f"{CONFIG_NAME} gives {expected}"
            )
        checkpoint[PRETRAINED_KEY] = {"words": "\n".join(words), "vectors": vectors}
    checkpoint["state_dict"] = tensors
    checkpoint["test_results"] = config.get("test_results")
    return checkpoint


def resolve_folder(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local model folder: ``name_or_path`` itself when it is a folder, else the Hub model ``owner/name``
    (``owner/name@revision`` also names a revision) downloaded with ``huggingface_hub.snapshot_download``, or
    found in its cache (``HF_HUB_CACHE``, or ``cache_dir``) when offline (``HF_HUB_OFFLINE=1``)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    match = REPO_ID.match(str(name_or_path))
    if path.exists() or match is None:
        raise SeqtagInputError(
            f"{name_or_path}: not a model folder, nor a Hugging Face Hub model name like 'owner/name'"
        )
    repo_id, revision = match["repo"], revision or match["revision"]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            allow_patterns=list(MODEL_FILES),
            library_name="seqtag",
            library_version=__version__,
        )
    except LocalEntryNotFoundError as err:
        raise SeqtagInputError(
            f"{name_or_path}: no such folder, and the Hub model {repo_id} (revision {revision or 'main'}) is not in "
            f"the local cache while the Hub cannot be reached: {str(err).splitlines()[0]}"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise SeqtagInputError(f"{name_or_path}: cannot download the Hub model {repo_id}: {err}") from None
    return Path(folder)


def from_pretrained(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    map_location: str | torch.device = "cpu",
) -> Tagger:
    """``Tagger.from_pretrained``: a tagger from a model folder or a Hub model name (see :func:`resolve_folder`)."""
    from seqtag.tagger import Tagger

    folder = resolve_folder(name_or_path, revision, cache_dir, token, local_files_only)
    checkpoint = checkpoint_from_folder(folder)
    tagger = Tagger.from_checkpoint(checkpoint, map_location)
    tagger.origin = {
        "data": checkpoint["datamodule_hyper_parameters"],
        "test_results": checkpoint["test_results"],
        "source": str(name_or_path),
    }
    return tagger


# ----------------------------------------------------------------------------------------- the command line path
def cache_root() -> Path:
    """Where converted checkpoints are kept: ``$SEQTAG_CACHE/hub``, else ``$XDG_CACHE_HOME/seqtag/hub`` (the
    vectors cache's convention)."""
    root = os.environ.get("SEQTAG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "seqtag"
    )
    return Path(root) / "hub"


def checkpoint_file(folder: str | Path) -> Path:
    """A model folder as a Lightning checkpoint file (``weights_only``-loadable), so that ``seqtag predict|test``
    run their ``--ckpt_path`` path on it. Kept in :func:`cache_root`, keyed by the folder's path and its files'
    sizes and modification times; the same folder is converted once."""
    import lightning
    import torch

    folder = Path(folder).resolve()
    key = hashlib.sha256(str(folder).encode())
    for name in MODEL_FILES:
        if (folder / name).exists():
            stat = (folder / name).stat()  # follows the Hub cache's links to the blobs
            key.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    target = cache_root() / key.hexdigest()[:20] / "model.ckpt"  # .ckpt: data.vocab reads the table from it
    if target.is_file():
        return target
    checkpoint = checkpoint_from_folder(folder)
    checkpoint.pop("test_results", None)
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    checkpoint["epoch"], checkpoint["global_step"] = 0, 0
    checkpoint["converted_from"] = str(folder)
    with atomic_open(target, "wb") as f:
        torch.save(checkpoint, f)
    return target


# ------------------------------------------------------------------------------------------------------- pushing
def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload seqtag tagger",
) -> str:
    """Uploads a model folder to the Hub model repo ``repo_id`` (created when missing; private with ``private``).
    A pretrained word list from an earlier upload that this folder has no longer is removed. Returns the commit's
    URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    checkpoint_from_folder(folder)  # a broken folder fails here, not for the users who download it
    api = HfApi(token=token, library_name="seqtag", library_version=__version__)
    try:
        api.create_repo(repo_id, private=private, token=token, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            token=token,
            repo_type="model",
            delete_patterns=[PRETRAINED_WORDS_NAME],
        )
    except (HfHubHTTPError, ConnectionError) as err:  # refused (login, rights, name) or unreachable (offline mode)
        raise SeqtagInputError(
            f"{repo_id}: the upload to the Hugging Face Hub failed (log in with `hf auth login` or pass a token with "
            f"write access; HF_HUB_OFFLINE must be unset): {str(err).splitlines()[0]}"
        ) from None
    return str(getattr(commit, "commit_url", commit))


def push_to_hub(
    tagger: Tagger,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload seqtag tagger",
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
) -> str:
    """``Tagger.push_to_hub``: writes the model folder (card included) in a temporary folder and uploads it."""
    with tempfile.TemporaryDirectory(prefix="seqtag-hub-") as tmp:
        save_pretrained(tagger, tmp, repo_id=repo_id, language=language, tags=tags)
        return push_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message)
