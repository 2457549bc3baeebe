"""`seqtag tune`: the search space file and its errors, the pruning callback, trials whose process died, and a small
search on the quickstart data that resumes and writes a best config that `seqtag fit` takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml

from seqtag.cli import main
from seqtag.errors import SeqtagInputError
from seqtag.tuning import (
    SearchSpace,
    TrialPruning,
    counted,
    fail_dead_trials,
    mark_owner,
    open_storage,
    option_argument,
    storage_url,
)
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "seqtag" / "examples" / "quickstart"
SPACE = """\
model.hidden_size: {type: int, low: 8, high: 16, log: true}
model.dropout: {type: float, low: 0.1, high: 0.5, step: 0.1}
model.char_encoder: {type: categorical, choices: [cnn, none]}
model.optimizer.init_args.lr: {type: float, low: 5e-3, high: 2.0e-2, log: true}
"""


@pytest.mark.parametrize(
    "text, message",
    [
        ("- model.dropout\n", "expected a mapping of options to ranges"),
        ("model.dropout: 0.3\n", "model.dropout: expected a mapping such as {type: float"),
        ("model.dropout: {type: uniform, low: 0, high: 1}\n", "type should be one of int, float, categorical"),
        ("model.dropout: {type: float, low: 0.1}\n", "model.dropout: a float option needs high"),
        ("model.dropout: {type: float, low: 0.5, high: 0.1}\n", "low should be at most high, got low=0.5"),
        ("model.hidden_size: {type: int, low: 0, high: 64, log: true}\n", "a log scale needs low > 0, got low=0"),
        ("model.hidden_size: {type: int, low: 8.5, high: 64}\n", "model.hidden_size: low should be an integer"),
        ("model.dropout: {type: float, low: 0.1, high: 0.5, log: true, step: 0.1}\n", "log and step cannot"),
        ("model.dropout: {type: float, low: 0.1, high: 0.5, steps: 0.1}\n", "unknown field steps for a float"),
        ("model.char_encoder: {type: categorical, choices: []}\n", "choices should be a non-empty list"),
        ("trainer.logger.init_args.name: {type: categorical, choices: [a]}\n", "set by seqtag tune"),
        ("model dropout: {type: float, low: 0.1, high: 0.5}\n", "should be written section.key"),
        ("model.dropout: {type: float, low: 0.1, high: [0.5\n", "not valid YAML"),
    ],
)
def test_space_errors_name_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "space.yaml", text)
    with pytest.raises(SeqtagInputError) as err:
        SearchSpace.from_yaml(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_space_options_are_checked_against_the_fit_config() -> None:
    config = {"model": {"hidden_size": 64, "dropout": 0.3, "lr_scheduler": None, "optimizer": {"init_args": {}}}}
    space = SearchSpace.from_dict({"model.hiden_size": {"type": "int", "low": 8, "high": 16}}, "s.yaml")
    with pytest.raises(SeqtagInputError, match=r"s.yaml: model.hiden_size: no such .*did you mean model.hidden_size"):
        space.check_options(config, fixed=[])
    space = SearchSpace.from_dict({"model.lr_scheduler.init_args.factor": {"type": "float", "low": 0.1, "high": 1}})
    with pytest.raises(SeqtagInputError, match="model.lr_scheduler is null in the config"):
        space.check_options(config, fixed=[])
    space = SearchSpace.from_dict({"model.dropout": {"type": "float", "low": 0.1, "high": 0.5}})
    with pytest.raises(SeqtagInputError, match="model.dropout: searched here and also given on the command line"):
        space.check_options(config, fixed=["model.dropout"])
    # Below a searched class the options depend on the class drawn: left to fit.
    searched_class = {
        "model.optimizer": {"type": "categorical", "choices": ["torch.optim.SGD"]},
        "model.optimizer.init_args.momentum": {"type": "float", "low": 0.5, "high": 0.9},
    }
    SearchSpace.from_dict(searched_class).check_options(config, fixed=[])


def test_samples_stay_in_their_ranges_and_become_fit_options() -> None:
    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}
    space = SearchSpace.from_dict(
        {
            "model.hidden_size": {"type": "int", "low": 8, "high": 64, "log": True},
            "model.num_layers": {"type": "int", "low": 1, "high": 5, "step": 2},
            "model.dropout": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1},
            "model.optimizer.init_args.lr": {"type": "float", "low": "1e-4", "high": 1.0e-2, "log": True},
            "model.optimizer": {"type": "categorical", "choices": [adam, "torch.optim.SGD"]},
            "model.word_vectors_trainable": {"type": "categorical", "choices": [True, None]},
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        values = space.sample(study.ask())
        assert 8 <= values["model.hidden_size"] <= 64 and values["model.num_layers"] in (1, 3, 5)
        assert round(values["model.dropout"] * 10) == pytest.approx(values["model.dropout"] * 10)
        assert 1e-4 <= values["model.optimizer.init_args.lr"] <= 1e-2
        seen.append(values["model.optimizer"])
    assert adam in seen and "torch.optim.SGD" in seen  # a mapping choice comes back as the mapping
    assert option_argument("model.char_encoder", "lstm") == "--model.char_encoder=lstm"
    assert option_argument("model.optimizer", adam) == f"--model.optimizer={json.dumps(adam)}"
    assert option_argument("model.x", None) == "--model.x=null" and option_argument("a.b", True) == "--a.b=true"


class Logger:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.update(metrics)


def _trainer(score: float, sanity_checking: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=sanity_checking,
        checkpoint_callback=SimpleNamespace(monitor="val/f1"),
        callback_metrics={"val/f1": torch.tensor(score)},
        is_global_zero=True,
        strategy=SimpleNamespace(broadcast=lambda value: value),
        should_stop=False,
        loggers=[Logger()],
        global_step=10,
    )


def test_pruning_callback_reports_and_stops_a_trial_behind_the_others(tmp_path: Path) -> None:
    url = storage_url(str(tmp_path / "study.db"))
    study = optuna.create_study(storage=open_storage(url, heartbeat=False), study_name="s", direction="maximize")
    for _ in range(5):  # the median pruner waits for 5 finished trials
        trial = study.ask()
        trial.report(0.8, 0)
        study.tell(trial, 0.8)
    for score, pruned in ((0.9, False), (0.1, True)):
        trial = study.ask()
        callback = TrialPruning(url, "s", trial.number, pruner="median")
        callback.setup(_trainer(score), None, "fit")
        callback.on_validation_end(_trainer(score, sanity_checking=True), None)
        trainer = _trainer(score)
        callback.on_validation_end(trainer, None)
        callback.on_fit_end(trainer, None)
        assert trainer.should_stop is pruned  # stopped as early stopping stops: checkpoints and logs finish
        assert trainer.loggers[0].logged == {"tune/pruned": float(pruned)}
        (frozen,) = [t for t in study.get_trials() if t.number == trial.number]
        assert frozen.intermediate_values == {0: pytest.approx(score)}  # once: the sanity check is not reported
        assert frozen.user_attrs["monitor"] == "val/f1"
        assert frozen.user_attrs.get("pruned") == ("pruned after validation 1: val/f1 0.1000" if pruned else None)
    # A trial's config.yaml run again: its finished trial (or a study gone) is left as it is, the fit goes on.
    for name, number in (("s", 0), ("gone", 0)):
        callback = TrialPruning(url, name, number)
        with pytest.warns(UserWarning, match=f"trial 0 of the study {name} is not running: not reported"):
            callback.setup(_trainer(0.1), None, "fit")
        trainer = _trainer(0.1)
        callback.on_validation_end(trainer, None)
        assert not trainer.should_stop
    assert study.trials[0].intermediate_values == {0: 0.8}


def test_a_trial_whose_process_died_is_marked_failed_and_not_counted(tmp_path: Path) -> None:
    study = optuna.create_study(
        storage=open_storage(storage_url(str(tmp_path / "s.db")), heartbeat=False), study_name="s"
    )
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = study.ask(), study.ask()
    mark_owner(dead)
    mark_owner(alive)
    dead.set_user_attr("pid", int(finished.stdout))
    assert fail_dead_trials(study) == [dead.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {dead.number: optuna.trial.TrialState.FAIL, alive.number: optuna.trial.TrialState.RUNNING}
    assert counted(study) == 0


def small_split(folder: Path, name: str, count: int) -> Path:
    text = (QUICKSTART / f"{name}.conll").read_text().split("\n\n")[:count]
    return write(folder / f"{name}.conll", "\n\n".join(text) + "\n")


def test_unknown_option_in_the_space_stops_before_any_trial(tmp_path: Path, capsys) -> None:
    space = write(tmp_path / "space.yaml", "model.hiden_size: {type: int, low: 8, high: 16}\n")
    args = ["tune", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--search", str(space), "--trials", "1"]
    assert main([*args, "--output", str(tmp_path / "tune")]) == 2
    err = capsys.readouterr().err
    assert f"{space}: model.hiden_size: no such option in the fit config (did you mean model.hidden_size?)" in err
    assert not (tmp_path / "tune").exists()


def test_the_shipped_space_fits_the_ner_config() -> None:
    from seqtag.commands.tune import print_config

    config = yaml.safe_load(print_config(["--config", str(ROOT / "configs" / "ner.yaml")]))
    SearchSpace.from_yaml(ROOT / "configs" / "search" / "ner.yaml").check_options(config, fixed=[])


def test_search_resumes_and_writes_a_best_config_fit_takes(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    data = tmp_path / "data"
    out = tmp_path / "tune"
    args = [
        "tune", "--config", ROOT / "configs" / "quickstart.yaml", "--search", write(tmp_path / "space.yaml", SPACE),
        "--study_name", "qs", "--output", out, "--seed", "0",
        "--data.train", small_split(data, "train", 200), "--data.validation", small_split(data, "dev", 40),
        "--data.test", "null", "--data.cache_dir", tmp_path / "cache",
        "--trainer.max_epochs=1", "--model.word_dim=16", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=5",
    ]  # fmt: skip
    args = [str(a) for a in args]
    assert main([*args, "--trials", "2"]) == 0
    printed = capsys.readouterr().out
    assert "trial  state     val/f1  model.hidden_size  model.dropout  model.char_encoder" in printed
    storage = storage_url(str(out / "qs.db"))
    study = optuna.load_study(study_name="qs", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # each its own folder and W&B run, named in the study's group, with its values
        (run,) = (out / "qs" / f"trial{trial.number}" / "wandb").glob("offline-run-*/*.wandb")
        events = run.read_bytes()
        assert f"qs-trial{trial.number}".encode() in events and b'"study":"qs"' in events
        assert f'"model.char_encoder":"{trial.params["model.char_encoder"]}"'.encode() in events
        assert Path(trial.user_attrs["checkpoint"]).is_file()

    # A call killed during a trial left it running: the next call marks it failed and runs a new one in its place.
    killed = study.ask()
    killed.set_user_attr("host", os.uname().nodename)
    killed.set_user_attr("pid", int(subprocess.check_output([sys.executable, "-c", "import os; print(os.getpid())"])))
    assert main([*args, "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"trial {killed.number} was stopped with its process: marked failed" in printed
    states = [t.state.name for t in optuna.load_study(study_name="qs", storage=storage).trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert main([*args, "--trials", "3"]) == 0  # nothing left to do: no new trial
    assert len(optuna.load_study(study_name="qs", storage=storage).trials) == 4

    best = optuna.load_study(study_name="qs", storage=storage).best_trial
    best_yaml = out / "qs.best.yaml"
    written = yaml.safe_load(best_yaml.read_text())
    assert written["model"]["hidden_size"] == best.params["model.hidden_size"]
    lr = best.params["model.optimizer.init_args.lr"]
    assert written["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(lr)
    assert written["trainer"]["max_epochs"] == 1 and written["model"]["word_dim"] == 16  # the fixed options
    assert written["trainer"]["logger"]["init_args"]["name"] is None  # no trial's own run settings
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--config", str(best_yaml), "--print_config"])
    assert exit.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out) == written


def test_a_trial_behind_the_others_is_pruned_after_its_first_epoch(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tune"
    out.mkdir()
    storage = storage_url(str(out / "pr.db"))
    study = optuna.create_study(storage=storage, study_name="pr", direction="maximize")
    distributions = {
        "model.hidden_size": optuna.distributions.IntDistribution(8, 16, log=True),
        "model.dropout": optuna.distributions.FloatDistribution(0.1, 0.5, step=0.1),
        "model.char_encoder": optuna.distributions.CategoricalDistribution(["cnn", "none"]),
        "model.optimizer.init_args.lr": optuna.distributions.FloatDistribution(5e-3, 2e-2, log=True),
    }
    params = {
        "model.hidden_size": 8,
        "model.dropout": 0.1,
        "model.char_encoder": "none",
        "model.optimizer.init_args.lr": 0.01,
    }
    for _ in range(5):  # five perfect trials: the median pruner's start-up count, a median no trial reaches
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=1.0, intermediate_values={0: 1.0, 1: 1.0}
            )
        )
    data = tmp_path / "data"
    args = [
        "tune", "--config", ROOT / "configs" / "quickstart.yaml", "--search", write(tmp_path / "space.yaml", SPACE),
        "--study_name", "pr", "--output", out, "--sampler", "random", "--trials", "6",
        "--data.train", small_split(data, "train", 100), "--data.validation", small_split(data, "dev", 20),
        "--data.test", "null", "--data.cache_dir", tmp_path / "cache", "--trainer.logger=false",
        "--trainer.max_epochs=3", "--model.word_dim=16", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=5",
    ]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    trial = optuna.load_study(study_name="pr", storage=storage).trials[5]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]  # stopped after its first validation, not at max_epochs
    assert trial.user_attrs["pruned"].startswith("pruned after validation 1: val/f1 ")
    assert Path(trial.user_attrs["checkpoint"]).is_file()  # the fit ended normally: its checkpoints are written
    assert "5      pruned" in capsys.readouterr().out


def test_failed_trials_are_replaced_three_in_a_row_stop_and_input_errors_stop_at_once(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import seqtag.commands.tune as tune

    outcomes = iter(["fail", "score", "fail", "fail", "fail", "input"])

    def fake_fit(args: list[str]) -> None:  # a fit that fails, or reports one validation score as TrialPruning does
        outcome = next(outcomes)
        if outcome == "fail":
            raise RuntimeError("CUDA out of memory")
        if outcome == "input":
            raise SeqtagInputError("train.conll:3: expected 2 columns, got 1")
        callback = TrialPruning(**json.loads(args[-1].split("=", 1)[1])["init_args"])
        callback.setup(_trainer(0.5), None, "fit")
        callback.on_validation_end(_trainer(0.5), None)

    monkeypatch.setattr(tune, "run_fit", fake_fit)
    space = write(tmp_path / "space.yaml", "model.dropout: {type: float, low: 0.1, high: 0.5}\n")
    args = ["tune", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--search", str(space)]
    args += ["--study_name", "f", "--output", str(tmp_path / "tune"), "--trials"]
    assert main([*args, "1"]) == 0  # trial 0 fails, trial 1 takes its place
    storage = storage_url(str(tmp_path / "tune" / "f.db"))
    assert [t.state.name for t in optuna.load_study(study_name="f", storage=storage).trials] == ["FAIL", "COMPLETE"]
    assert main([*args, "3"]) == 0  # a failure every trial meets: three in a row stop the call
    assert "f: 3 trials failed in a row; stopping" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="f", storage=storage).trials) == 5
    assert main([*args, "3"]) == 2  # an input error: every trial would meet it, the study stops at once
    err = capsys.readouterr().err
    assert err.endswith("seqtag: error: train.conll:3: expected 2 columns, got 1\n") and "Traceback" not in err
    assert optuna.load_study(study_name="f", storage=storage).trials[-1].state.name == "FAIL"
