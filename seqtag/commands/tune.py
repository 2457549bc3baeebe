"""``seqtag tune``: a hyperparameter search over any config option (Optuna); each trial is a ``seqtag fit``.

    seqtag tune --config configs/ner.yaml --search configs/search/ner.yaml --trials 30 \\
        --data.train my/train.conll --data.validation my/dev.conll --data.test my/test.conll
    seqtag fit --config runs/tune/ner-ner.best.yaml        # the best trial's config, as it is

Options other than tune's own (``--data.train x``, ``--trainer.max_epochs=20``) go to every trial. Each trial runs
``seqtag fit`` in this process through the same CLI code, in its own folder ``runs/tune/<study>/trial<k>``, as the
W&B run ``<study>-trial<k>`` of the group ``<study>`` with the sampled values in its config. The study is kept in
``runs/tune/<study>.db`` (SQLite): the same command again continues it up to ``--trials`` completed or pruned trials.
After every trial the best config so far is written to ``runs/tune/<study>.best.yaml``. Details: docs/tuning.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import logging
import shlex
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from seqtag.atomic import atomic_write_text
from seqtag.console import finish_wandb_run, quiet_libraries
from seqtag.errors import NonFiniteLossError, SeqtagInputError

try:
    import optuna
except ImportError as err:  # an optional dependency: seqtag[tune]
    raise SeqtagInputError("seqtag tune needs Optuna: pip install 'seqtag[tune]' (or: pip install optuna)") from err
from seqtag.tuning import (
    COUNTED_STATES,
    PRUNERS,
    SearchSpace,
    best_score,
    counted,
    fail_dead_trials,
    format_value,
    make_pruner,
    mark_owner,
    open_storage,
    option_argument,
    reserved,
    storage_url,
    trials_table,
)

MAX_FAILURES_IN_A_ROW = 3


class TrialFailed(Exception):
    """A trial's fit failed in a way particular to its values (a diverging loss, memory): the study goes on."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqtag tune",
        description="Search config options with Optuna; each trial is a `seqtag fit`. Any other --section.key "
        "value (e.g. --data.train my/train.conll, --trainer.max_epochs 20) is given to every trial.",
        allow_abbrev=False,  # `--trial` must not pass for --trials: unknown options go to the trials' fit
    )
    parser.add_argument("-c", "--config", action="append", default=[], help="a fit config (may be repeated)")
    parser.add_argument("--search", required=True, help="the search space: YAML, one entry per option")
    parser.add_argument("--trials", type=int, required=True, help="completed or pruned trials in all")
    parser.add_argument("--study_name", default=None, help="default: <config name>-<search space name>")
    parser.add_argument("--storage", default=None, help="a file (SQLite) or an RDB URL; default: <output>/<study>.db")
    parser.add_argument("--output", default="runs/tune", help="folder of the trials, the study and the best config")
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--direction", choices=("auto", "maximize", "minimize"), default="auto")
    parser.add_argument("--pruner", choices=PRUNERS, default="median")
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    parser.add_argument("--seed", type=int, default=None, help="the sampler's seed")
    return parser


def tune_main(args: list[str]) -> int:
    """``seqtag tune ...``; returns the exit status."""
    options, fixed = _parser().parse_known_args(args)
    if fixed and not fixed[0].startswith("-"):
        raise SeqtagInputError(f"seqtag tune: expected --section.key options for the trials, got {fixed[0]!r}")
    if options.trials < 1:
        raise SeqtagInputError(f"--trials should be at least 1, got {options.trials}")
    space = SearchSpace.from_yaml(options.search)
    return Tuner(options, fixed, space, command=shlex.join(["seqtag", "tune", *args])).run()


def print_config(args: list[str]) -> str:
    """The effective config of ``seqtag fit ARGS`` (``--print_config``), as YAML text."""
    from seqtag.commands.tagger import cli_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            cli_main(["fit", *args, "--print_config"])
        except SystemExit as exit:  # --print_config ends by exiting; a bad option exits 2 after its message
            if exit.code not in (0, None):
                raise
    return out.getvalue()


def run_fit(args: list[str]) -> None:
    """``seqtag fit ARGS`` in this process, as the ``seqtag`` command runs it: its warning filters, and its W&B run
    finished at the end (as failed after an exception)."""
    from seqtag.commands.tagger import cli_main

    status = 1
    with warnings.catch_warnings():
        quiet_libraries(fitting=True)
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            cli_main(["fit", *args])
            status = 0
        finally:
            finish_wandb_run(status)


def _fixed_keys(args: list[str]) -> list[str]:
    return [a[2:].split("=")[0].removesuffix("+") for a in args if a.startswith("--")]


def _one_device(devices: Any) -> bool:
    """Whether Lightning's ``devices`` value names one device: 1, "1", [k] or "k,"."""
    if isinstance(devices, (list, tuple)):
        return len(devices) == 1
    text = str(devices).strip()
    if text.endswith(","):
        return len([d for d in text.split(",") if d.strip()]) == 1
    return text == "1"


class _DropRecords(logging.Filter):
    """Drops a logger's records while ``when()`` is true (Optuna's note of a trial that stopped the study, which the
    command reports itself)."""

    def __init__(self, logger: logging.Logger, when: Callable[[], bool]) -> None:
        super().__init__()
        self.logger, self.when = logger, when
        logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.when()

    def close(self) -> None:
        self.logger.removeFilter(self)


class Tuner:
    """One ``seqtag tune`` call: the study, the trials' arguments, the objective and the best config."""

    def __init__(
        self, options: argparse.Namespace, fixed: list[str], space: SearchSpace, command: str = "seqtag tune"
    ) -> None:
        self.options, self.fixed, self.space = options, fixed, space
        self.configs = [a for path in options.config for a in ("--config", path)]
        stems = [Path(path).stem for path in options.config] + [Path(options.search).stem]
        self.name = options.study_name or "-".join(stems)
        self.output = Path(options.output)
        self.storage = storage_url(options.storage or str(self.output / f"{self.name}.db"))
        self.best_path = self.output / f"{self.name}.best.yaml"
        self.command = command
        self._best_written: int | None = None

    # ------------------------------------------------------------------------------------------------- setup
    def _check(self) -> None:
        """Reads the effective config of the trials' common options; checks the space and the options against it."""
        for key in _fixed_keys(self.fixed):
            if reserved(key, allowed=("trainer.devices",)):
                raise SeqtagInputError(f"--{key}: set by seqtag tune for each trial")
        self.base = yaml.safe_load(print_config([*self.configs, *self.fixed]))
        self.space.check_options(self.base, _fixed_keys(self.fixed))
        trainer = self.base.get("trainer") or {}
        # Trials run in this process: several devices would launch DDP processes that run `seqtag tune` again.
        self.defaults = ["--calibrate=false"]  # the confidence calibration plays no part in the score
        devices = trainer.get("devices", "auto")
        if devices == "auto":
            self.defaults.append("--trainer.devices=1")
        elif not _one_device(devices):
            raise SeqtagInputError(
                f"trainer.devices={devices}: each trial of seqtag tune runs on one device. To use several, run one "
                f"`seqtag tune` per device on the same --storage (e.g. CUDA_VISIBLE_DEVICES=k seqtag tune ...)"
            )
        self.max_epochs = trainer.get("max_epochs")
        mode = (self.base.get("checkpoint") or {}).get("mode", "max")
        auto = "maximize" if mode == "max" else "minimize"
        self.direction = auto if self.options.direction == "auto" else self.options.direction

    def _open_study(self) -> optuna.Study:
        if self.storage.startswith("sqlite:///"):
            Path(self.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            storage=open_storage(self.storage),
            study_name=self.name,
            direction=self.direction,
            pruner=make_pruner(self.options.pruner, self.max_epochs),
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise SeqtagInputError(
                f"study {self.name} ({self.storage}) was created to {study.direction.name.lower()}, "
                f"not to {self.direction}: give another --study_name"
            )
        # A resumed study draws on: seeded by the trials so far, a seed never repeats earlier trials' draws.
        seed = None if self.options.seed is None else self.options.seed + len(study.trials)
        random = self.options.sampler == "random"
        study.sampler = optuna.samplers.RandomSampler(seed) if random else optuna.samplers.TPESampler(seed=seed)
        setup = {"space": [vars(p) | {"choices": list(p.choices)} for p in self.space.parameters], "fit": self.fixed}
        setup = json.loads(json.dumps(setup, default=str))
        if "setup" not in study.user_attrs:
            study.set_user_attr("setup", setup)
        elif study.user_attrs["setup"] != setup:
            print(
                f"{self.name}: note: the study was started with another search space or other fixed options; its "
                "earlier trials stay in it and guide the sampler",
                file=sys.stderr,
            )
        return study

    # ------------------------------------------------------------------------------------------------ trials
    def trial_arguments(self, number: int, values: dict[str, Any]) -> list[str]:
        """The ``seqtag fit`` arguments of trial ``number``: configs, tune's defaults, the fixed options, the sampled
        values, then the trial's folder, W&B run and pruning callback."""
        folder = (self.output / self.name / f"trial{number}").resolve()
        args = [*self.configs, *self.defaults, *self.fixed, *(option_argument(k, v) for k, v in values.items())]
        args.append(f"--trainer.default_root_dir={folder}")
        logger = (self.base.get("trainer") or {}).get("logger")
        if isinstance(logger, dict) and "class_path" in logger:
            init_args = logger.get("init_args") or {}
            module, _, name = logger["class_path"].rpartition(".")
            from lightning.pytorch.loggers import WandbLogger

            if issubclass(getattr(importlib.import_module(module), name), WandbLogger):
                config = {**(init_args.get("config") or {}), "tune": {"study": self.name, "trial": number}}
                config["tune"]["params"] = values
                args += [
                    f"--trainer.logger.init_args.name={self.name}-trial{number}",
                    f"--trainer.logger.init_args.group={self.name}",
                    f"--trainer.logger.init_args.config={json.dumps(config)}",
                ]
            if "save_dir" in init_args:
                args.append(f"--trainer.logger.init_args.save_dir={folder}")
        callback = {
            "class_path": "seqtag.tuning.TrialPruning",
            "init_args": {
                "storage": self.storage,
                "study_name": self.name,
                "trial": number,
                "pruner": self.options.pruner,
                "max_epochs": self.max_epochs,
            },
        }
        return [*args, f"--trainer.callbacks+={json.dumps(callback)}"]

    def objective(self, trial: optuna.Trial) -> float:
        """Trains trial ``trial`` and returns its best validation score.

        A failure of these values raises :class:`TrialFailed` (the next trial runs). An input error or Ctrl-C stops
        the study: the trial returns NaN, which Optuna records as failed without a traceback, and :meth:`run` then
        reports the reason."""
        mark_owner(trial)
        values = self.space.sample(trial)
        args = self.trial_arguments(trial.number, values)
        trial.set_user_attr("command", shlex.join(["seqtag", "fit", *args]))
        drawn = " ".join(f"{k}={format_value(v)}" for k, v in values.items())
        print(f"\n=== {self.name} trial {trial.number}: {drawn}", flush=True)
        interrupt = signal.getsignal(signal.SIGINT)
        try:
            run_fit(args)
        except NonFiniteLossError as err:  # a learning rate too high for these values
            raise TrialFailed(f"trial {trial.number}: {err}") from err
        except SeqtagInputError as err:
            return self._stop(err)
        except KeyboardInterrupt as err:
            return self._stop(err)
        except SystemExit as exit:
            if exit.code == 2:  # the CLI rejected an argument, after printing why
                return self._stop(SeqtagInputError(f"trial {trial.number}: seqtag fit rejected the options {drawn}"))
            return self._stop(KeyboardInterrupt())  # Lightning's graceful stop on Ctrl-C ends in sys.exit(1)
        except Exception as err:  # a failure of these values (memory, a bug they reach): the next trial runs
            raise TrialFailed(f"trial {trial.number}: {type(err).__name__}: {err}") from err
        finally:
            if signal.getsignal(signal.SIGINT) != interrupt:  # Lightning ignores further Ctrl-C after the first
                signal.signal(signal.SIGINT, interrupt)
            self._release_memory()
            self._record_checkpoint(trial)
        (frozen,) = [t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number]
        if "pruned" in frozen.user_attrs:  # TrialPruning ended the fit early
            raise optuna.TrialPruned(frozen.user_attrs["pruned"])
        score = best_score(frozen, self.direction)
        if score is None:
            return self._stop(
                SeqtagInputError(
                    f"trial {trial.number} reported no validation score: the fit needs validation data "
                    "(data.validation or data.validation_from_train) and validation runs (trainer.limit_val_batches)"
                )
            )
        return score

    def _stop(self, reason: BaseException) -> float:
        """Stops the study after this trial, recorded as failed, for ``reason`` (raised or reported by run)."""
        self.stop_reason = reason
        self.study.stop()
        return float("nan")

    def _record_checkpoint(self, trial: optuna.Trial) -> None:
        found = sorted((self.output / self.name / f"trial{trial.number}").glob("**/checkpoints/best.ckpt"))
        if found:
            trial.set_user_attr("checkpoint", str(found[-1]))

    @staticmethod
    def _release_memory() -> None:
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial: one line on how it ended, and the best config so far written out."""
        score = best_score(trial, self.direction)
        score = "" if score is None else f" {score:.4f}"
        best = self._best(study)
        summary = f" (best: trial {best.number}, {best.value:.4f})" if best is not None else ""
        print(f"=== {self.name} trial {trial.number} {trial.state.name.lower()}{score}{summary}", flush=True)
        self.write_best(study)
        # A failed trial is replaced, but a failure that every trial meets must not loop: 3 in a row stop the call.
        self.failures = self.failures + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        if self.failures >= MAX_FAILURES_IN_A_ROW:
            print(f"{self.name}: {self.failures} trials failed in a row; stopping", file=sys.stderr)
            study.stop()

    @staticmethod
    def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
        try:
            return study.best_trial
        except ValueError:  # no completed trial yet
            return None

    def write_best(self, study: optuna.Study) -> Path | None:
        """Writes the best trial's config (configs + fixed options + its values, as ``--print_config`` gives it):
        ``seqtag fit --config`` takes it as it is. Returns its path, None before any trial completed."""
        best = self._best(study)
        if best is None:
            return None
        if self._best_written == best.number and self.best_path.exists():
            return self.best_path
        values = self.space.values(best.params)
        text = print_config([*self.configs, *self.fixed, *(option_argument(k, v) for k, v in values.items())])
        monitor = best.user_attrs.get("monitor", "score")
        header = [
            f"# The best trial of the study {self.name}: trial {best.number}, {monitor} {best.value:.4f}",
            f"#   searched: {', '.join(f'{k}={format_value(v)}' for k, v in values.items())}",
            f"#   checkpoint: {best.user_attrs.get('checkpoint', '-')}",
            f"# Written by: {self.command}",
            f"# Train it: seqtag fit --config {self.best_path}",
        ]
        self.best_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.best_path, "\n".join(header) + "\n" + text)
        self._best_written = best.number
        return self.best_path

    # ------------------------------------------------------------------------------------------------- study
    def run(self) -> int:
        from seqtag.modules.transformer import sharing_kept_vectors

        self._check()
        self.study = study = self._open_study()
        for number in fail_dead_trials(study):
            print(f"{self.name}: trial {number} was stopped with its process: marked failed", flush=True)
        self.failures, self.stop_reason = 0, None
        print(f"{self.name}: {counted(study)} of {self.options.trials} trials done ({self.storage})", flush=True)
        status = 0
        if counted(study) < self.options.trials:
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials' own lines say how each went
            # Until the study holds its trials, counting other workers' on the same storage (or after --timeout).
            limit = optuna.study.MaxTrialsCallback(self.options.trials, states=COUNTED_STATES)
            quiet = _DropRecords(logging.getLogger("optuna.study._optimize"), lambda: self.stop_reason is not None)
            try:
                with sharing_kept_vectors():  # a frozen transformer reads each sentence once per search
                    study.optimize(
                        self.objective,
                        n_trials=None,
                        timeout=self.options.timeout,
                        catch=(TrialFailed,),
                        callbacks=[limit, self.after_trial],
                        gc_after_trial=False,  # done by the objective, which also frees GPU memory
                    )
            except KeyboardInterrupt as err:
                self.stop_reason = err
            finally:
                quiet.close()
        print(f"\n{trials_table(study, self.space)}")
        if isinstance(self.stop_reason, SeqtagInputError):
            raise self.stop_reason
        if isinstance(self.stop_reason, KeyboardInterrupt):
            print(f"{self.name}: interrupted; the same command continues the study", file=sys.stderr)
            status = 130
        best = self.write_best(study)
        if best is None:
            print(f"{self.name}: no trial completed", file=sys.stderr)
            return status or 1
        trial = study.best_trial
        print(f"Best trial {trial.number}: {trial.user_attrs.get('monitor', 'score')} {trial.value:.4f}")
        print(f"Best config: {best}   (seqtag fit --config {best})")
        return status
