"""``seqtag hub``: share a trained tagger through the Hugging Face Hub; and ``--model`` for ``seqtag
test|validate|predict``.

    seqtag hub save --ckpt_path runs/.../best.ckpt --output my-tagger [--language en]
    seqtag hub push --ckpt_path runs/.../best.ckpt --repo_id owner/my-tagger [--private] [--language en]
    seqtag hub push --folder my-tagger --repo_id owner/my-tagger     # a folder saved (and maybe edited) before
    seqtag predict --model owner/my-tagger --data.predict text.txt --predict_output tagged.jsonl

``save`` writes the model folder (:mod:`seqtag.hub`: safetensors, JSON, model card with the scores of the
``test_report.json`` beside the checkpoint); ``push`` uploads it (``hf auth login`` first, or ``--token``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqtag.errors import SeqtagInputError

# LightningCLI subcommands that take a trained model; `--model` there may name a model folder or a Hub model.
MODEL_COMMANDS = ("test", "validate", "predict")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqtag hub", description="Share a trained tagger through the Hugging Face Hub."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{save,push}")
    save = commands.add_parser("save", help="write a checkpoint as a Hub model folder (safetensors, JSON, card)")
    save.add_argument("--ckpt_path", required=True, help="a tagger checkpoint (best.ckpt)")
    save.add_argument("--output", required=True, help="the folder to write")
    push = commands.add_parser("push", help="upload a checkpoint (or a saved folder) to a Hub model repo")
    source = push.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="a tagger checkpoint (best.ckpt)")
    source.add_argument("--folder", help="a folder written by `seqtag hub save`, uploaded as it is")
    push.add_argument("--repo_id", required=True, help="owner/name of the model repo (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--token", default=None, help="a Hub token with write access (default: `hf auth login`'s)")
    push.add_argument("--commit_message", default="Upload seqtag tagger")
    for command in (save, push):
        command.add_argument("--language", nargs="+", default=None, help="language code(s) of the text, e.g. en")
        command.add_argument("--tags", nargs="+", default=(), help="card tags besides seqtag's own")
        if command is save:
            command.add_argument("--repo_id", default=None, help="the Hub name the card's usage snippet loads")
    return parser


def _language(values: list[str] | None) -> str | list[str] | None:
    return values[0] if values and len(values) == 1 else values


def hub_main(args: list[str]) -> int:
    """``seqtag hub save|push``; returns the exit status."""
    from seqtag import hub

    options = _parser().parse_args(args)
    language, tags = _language(options.language), list(options.tags)
    if options.command == "save":
        folder = hub.save_checkpoint_file(
            options.ckpt_path, options.output, repo_id=options.repo_id, language=language, tags=tags
        )
        print(f"Model folder written to {folder}: {', '.join(sorted(p.name for p in Path(folder).iterdir()))}")
        return 0
    if options.folder is not None:
        if options.language or tags:
            raise SeqtagInputError(
                "--language and --tags write the card of a --ckpt_path; a --folder is uploaded as it is (edit its "
                "README.md instead)"
            )
        url = hub.push_folder(
            options.folder,
            options.repo_id,
            private=options.private,
            token=options.token,
            commit_message=options.commit_message,
        )
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="seqtag-hub-") as tmp:
            hub.save_checkpoint_file(options.ckpt_path, tmp, repo_id=options.repo_id, language=language, tags=tags)
            url = hub.push_folder(
                tmp, options.repo_id, private=options.private, token=options.token,
                commit_message=options.commit_message,
            )  # fmt: skip
    print(f"Pushed to https://huggingface.co/{options.repo_id} ({url})")
    return 0


def _hub_model(value: str) -> bool:
    """Whether a ``--model`` value names a model folder or a Hub model rather than LightningCLI's model config (a
    YAML file, a class name or an inline config)."""
    from seqtag.hub import CONFIG_NAME, REPO_ID, WEIGHTS_NAME

    path = Path(value)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise SeqtagInputError(
                f"--model {value}: the folder holds no {CONFIG_NAME} and {WEIGHTS_NAME} (a model folder is written by "
                f"`seqtag hub save`; a model config is a YAML file)"
            )
        return True
    if path.exists() or value.lower().endswith((".yaml", ".yml", ".json")):
        return False
    return REPO_ID.match(value) is not None


def model_as_checkpoint(args: list[str]) -> list[str]:
    """``seqtag test|validate|predict --model FOLDER_OR_OWNER/NAME ...``: the arguments with ``--model X`` replaced
    by ``--ckpt_path <X as a cached Lightning checkpoint>`` (:func:`seqtag.hub.checkpoint_file`), so the
    ``--ckpt_path`` path (options from the checkpoint, streamed predictions, DDP) runs unchanged. Other ``--model``
    values (LightningCLI's model config) and other commands pass through."""
    command = next((i for i, a in enumerate(args) if a in ("fit", *MODEL_COMMANDS)), None)
    if command is None or args[command] not in MODEL_COMMANDS:
        return args
    for i in range(command + 1, len(args)):
        if args[i] == "--model" and i + 1 < len(args):
            value, end = args[i + 1], i + 2
        elif args[i].startswith("--model="):
            value, end = args[i].split("=", 1)[1], i + 1
        else:
            continue
        if not _hub_model(value):
            return args
        if any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in args):
            raise SeqtagInputError(f"--model {value} names the model to use: give it or --ckpt_path, not both")
        from seqtag import hub

        checkpoint = hub.checkpoint_file(hub.resolve_folder(value))
        return [*args[:i], "--ckpt_path", str(checkpoint), *args[end:]]
    return args
