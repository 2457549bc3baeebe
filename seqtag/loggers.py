"""Weights & Biases logging that never blocks: without a login it runs offline by itself and says how to sync."""

from __future__ import annotations

import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_logged_in() -> bool:
    """True when an API key is available (environment or ~/.netrc), so an online run will not ask for one."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        hosts = netrc.netrc(path).hosts if os.path.exists(path) else {}
    except (netrc.NetrcParseError, OSError):
        return False
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return base in hosts


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with ``offline=None`` meaning: online when logged in, offline otherwise.

    ``WANDB_MODE`` (online / offline / disabled) wins when set. Offline runs are written under
    ``<save_dir>/wandb/offline-run-*``; ``wandb sync <that folder>`` uploads them later.

    Args:
        project: W&B project. Default: ``seqtag``
        save_dir: where runs, checkpoints and configs go. Default: ``runs``
        offline: force offline (True) or online (False); None decides from the login. Default: None
        name: the run's display name. Default: chosen by W&B
        group: W&B group, e.g. the seeds of one benchmark. Default: None
        kwargs: other ``WandbLogger`` / ``wandb.init`` arguments (``name``, ``group``, ``tags``, ``entity``...).
    """

    def __init__(
        self,
        project: str = "seqtag",
        save_dir: str = "runs",
        offline: bool | None = None,
        name: str | None = None,
        group: str | None = None,
        **kwargs: Any,
    ) -> None:
        mode = os.environ.get("WANDB_MODE")
        if offline is None:
            offline = mode in ("offline", "dryrun") if mode else not wandb_logged_in()
        if offline and not mode:
            os.environ["WANDB_MODE"] = "offline"  # also silences wandb's login prompt in child processes
        os.makedirs(save_dir, exist_ok=True)
        kwargs.setdefault("settings", None)
        if kwargs["settings"] is None:
            kwargs.pop("settings")
        if group is not None:
            kwargs["group"] = group  # passed on to wandb.init: runs of one benchmark's seeds together
        super().__init__(name=name, project=project, save_dir=save_dir, offline=offline, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            # Lightning passes anonymous=None, which W&B warns about on every run (the setting is deprecated).
            self._wandb_init.pop("anonymous", None)
        if offline and mode != "disabled":
            rank_zero_info(
                f"W&B: no login found, logging offline under {save_dir}/wandb/. "
                f"Upload later with: wandb sync {save_dir}/wandb/offline-run-*"
            )

    def continue_run(self, run_id: str) -> None:
        """Log into the existing run ``run_id`` instead of a new one (W&B resumes it, online or offline), so a fit
        resumed from that run's checkpoint goes on in the same run and the same checkpoint folder
        (``<save_dir>/<project>/<run_id>/checkpoints``). Call it before the run starts."""
        if self._experiment is not None:
            raise RuntimeError(f"the W&B run {self._experiment.id} has already started")
        self._id = self._wandb_init["id"] = run_id
