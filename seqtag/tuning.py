"""Hyperparameter search with Optuna: the search space, the pruning callback and the study of ``seqtag tune``.

A search space is a YAML file with one entry per config option, keyed as on the command line::

    model.hidden_size: {type: int, low: 16, high: 64, log: true}
    model.dropout: {type: float, low: 0.1, high: 0.5, step: 0.05}
    model.char_encoder: {type: categorical, choices: [cnn, lstm]}
    model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}

Each trial is a ``seqtag fit`` (:mod:`seqtag.commands.tune`) with the sampled values as ``--key=value`` options and a
:class:`TrialPruning` callback, which reports the validation metric after every validation to the study (through its
storage, so the callback is configured by plain values) and stops the trial when the pruner says so. A study lives in
an RDB storage (SQLite by default): a later call continues it, and a trial whose process died is marked failed.

References: Optuna (Akiba et al., KDD 2019), https://optuna.readthedocs.io; the pruners are Optuna's
``MedianPruner`` and ``HyperbandPruner`` (Li et al., JMLR 2018).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from optuna.trial import TrialState

from seqtag.errors import SeqtagInputError

# Fields of a space entry, by type; the first ones are required.
SPACE_FIELDS = {
    "int": (("type", "low", "high"), ("log", "step")),
    "float": (("type", "low", "high"), ("log", "step")),
    "categorical": (("type", "choices"), ()),
}
# Options that `seqtag tune` sets for each trial itself (the logger's as `trainer.logger.init_args.*` or
# `trainer.logger.*`): a space entry or a fixed option naming one is an error. trainer.devices may be fixed to 1.
RESERVED_OPTIONS = (
    "trainer.default_root_dir",
    "trainer.logger.name",
    "trainer.logger.group",
    "trainer.logger.save_dir",
    "trainer.logger.config",
    "trainer.devices",
    "ckpt_path",
    "config",
)


def reserved(key: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether option ``key`` (or a part of it) is set by ``seqtag tune`` for each trial."""
    key = key.replace(".init_args.", ".")
    return any(key == r or key.startswith(r + ".") for r in RESERVED_OPTIONS if r not in allowed)


PRUNERS = ("median", "hyperband", "none")
# The states whose trials count towards `--trials`: a failed trial produced no score and is run again in its place.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
_OPTION_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class Parameter:
    """One searched option: ``key`` (``model.dropout``) and its distribution.

    Args:
        key: the option as on the command line, without ``--``.
        type: ``int``, ``float`` or ``categorical``.
        low, high: the range, both included (int and float).
        log: sample on a log scale (low > 0). Default: False
        step: sample ``low + k * step`` only. Default: None (any value)
        choices: the values of a categorical option; lists and mappings (a ``class_path`` with ``init_args``) too.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draws this option's value for ``trial``."""
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        return self.decode(trial.suggest_categorical(self.key, [self._encode(c) for c in self.choices]))

    @staticmethod
    def _encode(choice: Any) -> Any:
        # Optuna stores None, bool, int, float and str; a list or mapping (a class with init_args) as its JSON text.
        return json.dumps(choice, sort_keys=True) if isinstance(choice, (list, dict)) else choice

    def decode(self, stored: Any) -> Any:
        """The option's value from the value Optuna stored for it."""
        if self.type == "categorical":
            for choice in self.choices:
                if self._encode(choice) == stored:
                    return choice
        return stored


class SearchSpace:
    """The options a study searches, in the order of its file (a class choice before its ``init_args``).

    >>> space = SearchSpace.from_dict({"model.dropout": {"type": "float", "low": 0.1, "high": 0.5}})
    >>> space.keys
    ['model.dropout']
    """

    def __init__(self, parameters: list[Parameter], source: str = "<search space>") -> None:
        self.parameters = parameters
        self.source = source

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.parameters]

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Reads a space file; any problem raises ``SeqtagInputError`` naming the file (and the entry)."""
        try:
            entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise SeqtagInputError(f"{path}: cannot read the search space: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise SeqtagInputError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(entries, str(path))

    @classmethod
    def from_dict(cls, entries: Any, source: str = "<search space>") -> SearchSpace:
        if not isinstance(entries, dict) or not entries:
            example = "model.dropout: {type: float, low: 0.1, high: 0.5}"
            raise SeqtagInputError(f"{source}: expected a mapping of options to ranges, such as '{example}'")
        return cls([_parameter(str(key), spec, source) for key, spec in entries.items()], source)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Each option's value for ``trial``, in the space's order."""
        return {p.key: p.suggest(trial) for p in self.parameters}

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The options' values from a finished trial's ``params`` (as Optuna stored them)."""
        return {p.key: p.decode(params[p.key]) for p in self.parameters if p.key in params}

    def check_options(self, config: dict[str, Any], fixed: list[str]) -> None:
        """Each searched option exists in the effective ``config`` (``seqtag fit --print_config``) and is not also
        given a fixed value (``fixed``: the options on the command line)."""
        for key in self.keys:
            if key in fixed:
                raise SeqtagInputError(f"{self.source}: {key}: searched here and also given on the command line")
            # Below a searched class option (model.optimizer) the options depend on the class drawn: checked by fit.
            if any(key.startswith(other + ".") for other in self.keys):
                continue
            node: Any = config
            parts = key.split(".")
            for depth, part in enumerate(parts):
                where = ".".join(parts[:depth])
                if node is None:
                    raise SeqtagInputError(
                        f"{self.source}: {key}: {where} is null in the config; give it a class_path in the config "
                        "(or search it as a categorical option above this one)"
                    )
                if not isinstance(node, dict) or part not in node:
                    known = [f"{where}.{k}" if where else k for k in node] if isinstance(node, dict) else []
                    close = difflib.get_close_matches(".".join(parts[: depth + 1]), known, n=3, cutoff=0.8)
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    raise SeqtagInputError(f"{self.source}: {key}: no such option in the fit config{hint}")
                node = node[part]


def _parameter(key: str, spec: Any, source: str) -> Parameter:
    """One entry of a space file, checked: messages name the file and the entry."""
    where = f"{source}: {key}"
    if not _OPTION_KEY.match(key):
        raise SeqtagInputError(f"{where}: an option should be written section.key (e.g. model.dropout)")
    if reserved(key):
        raise SeqtagInputError(f"{where}: set by seqtag tune for each trial, it cannot be searched")
    if not isinstance(spec, dict):
        raise SeqtagInputError(
            f"{where}: expected a mapping such as {{type: float, low: 0.1, high: 0.5}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in SPACE_FIELDS:
        raise SeqtagInputError(f"{where}: type should be one of {', '.join(SPACE_FIELDS)}, got {kind!r}")
    required, optional = SPACE_FIELDS[kind]
    missing = [f for f in required if f not in spec]
    if missing:
        raise SeqtagInputError(f"{where}: a {kind} option needs {', '.join(missing)}")
    unknown = sorted(set(spec) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(required + optional)
        raise SeqtagInputError(f"{where}: unknown field {', '.join(unknown)} for a {kind} option (fields: {allowed})")
    if kind == "categorical":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SeqtagInputError(f"{where}: choices should be a non-empty list, got {choices!r}")
        return Parameter(key, kind, choices=tuple(choices))
    low, high = (_number(spec[f], kind, f"{where}: {f}") for f in ("low", "high"))
    step = None if spec.get("step") is None else _number(spec["step"], kind, f"{where}: step")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SeqtagInputError(f"{where}: log should be true or false, got {log!r}")
    if low > high:
        raise SeqtagInputError(f"{where}: low should be at most high, got low={low} and high={high}")
    if log and low <= 0:
        raise SeqtagInputError(f"{where}: a log scale needs low > 0, got low={low}")
    if step is not None and step <= 0:
        raise SeqtagInputError(f"{where}: step should be positive, got {step}")
    if log and step is not None and not (kind == "int" and step == 1):
        raise SeqtagInputError(f"{where}: log and step cannot be used together (step={step})")
    return Parameter(key, kind, low=low, high=high, log=log, step=step)


def _number(value: Any, kind: str, where: str) -> float | int:
    # YAML 1.1 reads `1e-4` (no dot) as a string: numbers written so are accepted.
    if isinstance(value, str):
        try:
            value = float(value) if kind == "float" else int(value)
        except ValueError:
            pass
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise SeqtagInputError(f"{where} should be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")


def option_argument(key: str, value: Any) -> str:
    """``--key=value`` as ``seqtag fit`` reads it: strings as they are (a ``Literal`` option takes no quotes), other
    values as JSON (numbers, true/false, null, lists, ``{"class_path": ...}``), which the CLI parses as YAML."""
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def make_pruner(name: str, max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    """``median`` (Optuna's defaults: no pruning before 5 trials have finished), ``hyperband`` (resources are
    validations, up to ``max_epochs``) or ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        max_resource = max_epochs if max_epochs and max_epochs > 0 else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SeqtagInputError(f"pruner should be one of {', '.join(PRUNERS)}, got {name!r}")


class TrialPruning(Callback):
    """Reports the validation metric of a ``seqtag tune`` trial to its study after each validation, and ends the
    fit when the study's pruner says the trial is behind.

    A pruned fit stops as early stopping does (``trainer.should_stop``): the epoch is summed up, its checkpoints are
    written and the logger finishes normally, with ``tune/pruned`` 1 (0 for a trial that ran to its end). The
    trial's ``pruned`` attribute then tells ``seqtag tune`` to record the trial as pruned.

    The trial is found through the study's storage, so the callback is given by plain values on the command line
    (``--trainer.callbacks+=...``) and works in any process. Steps count validations (epochs, unless
    ``check_val_every_n_epoch`` or ``val_check_interval`` say otherwise), the same for every trial of a study.

    Args:
        storage: the study's storage URL (``sqlite:////abs/path/study.db``).
        study_name: the study.
        trial: the trial's number in the study.
        pruner: ``median``, ``hyperband`` or ``none``. Default: ``median``
        max_epochs: the most validations a trial makes, for Hyperband. Default: None
    """

    def __init__(
        self, storage: str, study_name: str, trial: int, pruner: str = "median", max_epochs: int | None = None
    ) -> None:
        super().__init__()
        self.storage, self.study_name, self.trial_number = storage, study_name, trial
        self.pruner, self.max_epochs = pruner, max_epochs
        self._trial: optuna.Trial | None = None
        self._validations = 0
        self.pruned: str | None = None  # why, once pruned

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._trial is not None:
            return
        storage = open_storage(self.storage, heartbeat=False)
        pruner = make_pruner(self.pruner, self.max_epochs)
        try:
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        except KeyError:
            trial_id = None
        if trial_id is None or storage.get_trial(trial_id).state.is_finished():
            # A trial's saved config.yaml run again: the fit is a plain fit, the finished trial stays as it was.
            rank_zero_warn(f"trial {self.trial_number} of the study {self.study_name} is not running: not reported")
            return
        self._trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._trial is None or self.pruned:
            return
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None) or getattr(pl_module, "monitor", None)
        value = trainer.callback_metrics.get(monitor) if monitor else None
        if value is None:
            return
        step = self._validations
        self._validations += 1
        prune = False
        if trainer.is_global_zero:
            if step == 0:
                self._trial.set_user_attr("monitor", monitor)
            self._trial.report(float(value), step)
            prune = self._trial.should_prune()
        if trainer.strategy.broadcast(prune):
            self.pruned = f"pruned after validation {step + 1}: {monitor} {float(value):.4f}"
            if trainer.is_global_zero:
                self._trial.set_user_attr("pruned", self.pruned)
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({"tune/pruned": float(self.pruned is not None)}, step=trainer.global_step)
        if self.pruned:
            rank_zero_info(f"Trial {self.trial_number} {self.pruned}")


def storage_url(storage: str) -> str:
    """An RDB URL from ``--storage``: a URL as it is, a file path as an absolute ``sqlite:///`` URL."""
    if "://" in storage:
        return storage
    return f"sqlite:///{Path(storage).expanduser().resolve()}"


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """The study's storage. With ``heartbeat``, a trial whose process stopped beating for 2 minutes is marked
    failed (by the next trial to start, on any machine)."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # workers share one file
    beat = {"heartbeat_interval": 60, "grace_period": 120} if heartbeat else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat: since 2.9
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, **beat)


def mark_owner(trial: optuna.Trial) -> None:
    """Records the machine and process running ``trial``, so that :func:`fail_dead_trials` knows it."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Marks failed the running trials whose process on this machine no longer exists (a killed ``seqtag tune``),
    at once rather than after the heartbeat's grace period. Returns their numbers; they are never run again."""
    failed = []
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or not isinstance(pid, int) or _alive(pid):
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def counted(study: optuna.Study) -> int:
    """The trials that count towards ``--trials``: completed or pruned."""
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def best_score(trial: optuna.trial.FrozenTrial, direction: str) -> float | None:
    """A trial's best validation score (``direction``: maximize or minimize); None before its first validation.
    The objective of a complete trial; for a pruned one Optuna keeps the last score as its value, this the best."""
    scores = list(trial.intermediate_values.values())
    if not scores:
        return None
    return max(scores) if direction == "maximize" else min(scores)


def trials_table(study: optuna.Study, space: SearchSpace) -> str:
    """A text table of the study's trials: number, state, score and each option's value; ``*`` marks the best."""
    trials = study.get_trials(deepcopy=False)
    best = _best_number(study)
    direction = study.direction.name.lower()
    monitors = {t.user_attrs.get("monitor") for t in trials} - {None}
    score = monitors.pop() if len(monitors) == 1 else "score"
    header = ["trial", "state", score, *space.keys]
    rows = [header]
    for trial in trials:
        values = space.values(trial.params)
        rows.append(
            [
                f"{trial.number}{' *' if trial.number == best else ''}",
                trial.state.name.lower(),
                "-" if (value := best_score(trial, direction)) is None else f"{value:.4f}",
                *(format_value(values[k]) if k in values else "-" for k in space.keys),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _best_number(study: optuna.Study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no completed trial yet
        return None


def format_value(value: Any) -> str:
    """A searched value for people: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)
