"""`seqtag predict` on one device runs without Lightning (seqtag.commands.predict) and writes the file the
LightningCLI path writes, byte for byte; arguments it does not take go to LightningCLI."""

import inspect
import subprocess
import sys

import pytest

from seqtag.cli import main
from seqtag.commands import predict as direct
from seqtag.commands.tagger import SeqtagCLI, cli_main
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import DataFormatError
from tests.test_streaming import COMMON, checkpoint, inputs  # noqa: F401 (fixtures)


def lightning_predict(ckpt, source, output, *extra):
    """The LightningCLI path, called directly (seqtag.cli.main would take the direct one)."""
    cli_main(["predict", "--ckpt_path", str(ckpt), "--data.predict", str(source), "--predict_output", str(output),
              *COMMON, *extra])  # fmt: skip
    return output.read_bytes()


def direct_predict(ckpt, source, output, *extra):
    args = ["--ckpt_path", str(ckpt), "--data.predict", str(source), "--predict_output", str(output), *extra]
    assert direct.predict_main([*args, *COMMON]) == 0  # None would mean: left to LightningCLI
    return output.read_bytes()


@pytest.mark.parametrize(
    "source, output, extra",
    [
        ("text", "out.conll", []),
        ("conll", "out.conll", []),
        ("text", "out.jsonl", ["--n_best", "3", "--marginals", "true"]),
        ("conll", "out.jsonl", ["--n_best", "2", "--data.predict_chunk_size", "7"]),
        ("text", "out.conll", ["--data.batch_by_document", "true", "--data.eval_batch_size", "3"]),
        ("conll", "out.conll", ["--data.eval_bucketing", "sorted", "--data.eval_batch_size", "4"]),
    ],
    ids=["text", "conll_gold", "text_jsonl_nbest_marginals", "conll_jsonl_chunks", "documents", "sorted_buckets"],
)
def test_the_direct_path_writes_the_lightning_file(checkpoint, inputs, tmp_path, source, output, extra):  # noqa: F811
    expected = lightning_predict(checkpoint, inputs[source], tmp_path / "lightning" / output, *extra)
    got = direct_predict(checkpoint, inputs[source], tmp_path / "direct" / output, *extra)
    assert got == expected
    assert list((tmp_path / "direct").iterdir()) == [tmp_path / "direct" / output]  # no temporary file left


def test_seqtag_predict_imports_no_lightning(checkpoint, inputs, tmp_path):  # noqa: F811
    output = tmp_path / "out.conll"
    code = (
        "import sys; from seqtag.cli import main; "
        f"status = main(['predict', '--ckpt_path', {str(checkpoint)!r}, '--data.predict', {str(inputs['text'])!r}, "
        f"'--predict_output', {str(output)!r}]); "
        "print(status, 'lightning' in sys.modules, 'torchmetrics' in sys.modules, 'jsonargparse' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split()[-4:] == ["0", "False", "False", "False"]
    assert f"Predictions for 44 sentences written to {output}" in run.stdout
    assert output.read_text().count("\n\n") == 44


@pytest.mark.parametrize(
    "extra",
    [
        ["--config", "x.yaml"],
        ["--trainer.devices", "2"],
        ["--trainer.precision", "bf16-true"],
        ["--data.num_workers", "2"],
        ["--data.word_vectors", "vectors.txt"],
        ["--trainer.logger", "true"],
        ["--help"],
        ["--predict_format", "xml"],  # a bad value: LightningCLI's message names it
        ["--n_best", "two"],
    ],
)
def test_other_arguments_go_to_lightning(checkpoint, inputs, tmp_path, extra):  # noqa: F811
    args = ["--ckpt_path", str(checkpoint), "--data.predict", str(inputs["text"]), "--predict_output",
            str(tmp_path / "out.conll"), *extra]  # fmt: skip
    assert direct.predict_main(args) is None
    assert not (tmp_path / "out.conll").exists()


def test_a_bad_line_stops_the_direct_path_with_file_and_line(checkpoint, tmp_path):  # noqa: F811
    good = "EU rejects German call .\nPeter lives in Paris\n" * 10
    source = tmp_path / "bad.txt"
    source.write_bytes(good.encode() + b"caf\xe9\n" + good.encode())
    output = tmp_path / "out" / "bad.conll"
    with pytest.raises(DataFormatError, match=f"^{source}:21: bytes that are not utf-8"):
        direct_predict(checkpoint, source, output, "--data.predict_chunk_size", "7")
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
    assert main(["predict", "--ckpt_path", str(checkpoint), "--data.predict", str(source), "--predict_output",
                 str(output)]) == 2  # fmt: skip


def test_defaults_are_the_data_modules():
    parameters = inspect.signature(TaggingDataModule.__init__).parameters
    assert {name: parameters[name].default for name in direct.DATA_DEFAULTS} == direct.DATA_DEFAULTS
    # unknown_labels says how to score gold labels unseen in training: nothing to score when tagging
    assert set(direct.FROM_CHECKPOINT) == set(SeqtagCLI.READING_OPTIONS) - {"unknown_labels"}
