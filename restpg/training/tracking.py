"""Experiment tracking: where a run's training curves and E-step statistics go.

``--report-to`` names one or more of TensorBoard, Weights & Biases, MLflow and Trackio (or none).
The Trainer logs the SFT and M-step losses through its own integrations; restpg logs each round's
E-step statistics (samples, kept, truncated, reward mean, the reward histogram) to the same places,
so a dashboard shows both side by side. TensorBoard files go to ``<run>/logs/<step>``; the others
follow their own settings (``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``, ...).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RestpgError

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


class TrackingError(RestpgError, ValueError):
    """An unknown tracker, or one whose package is not installed."""


def parse_report_to(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """ "tensorboard,wandb" or a list -> ("tensorboard", "wandb"); "none" or empty -> ()."""
    names = value.split(",") if isinstance(value, str) else list(value or ())
    names = [n.strip().lower() for n in names if n.strip() and n.strip().lower() != "none"]
    for name in names:
        if name not in TRACKERS:
            raise TrackingError(f"report_to: unknown tracker {name!r}; known: {', '.join(TRACKERS)} or none")
    return tuple(dict.fromkeys(names))


def check_installed(report_to: Sequence[str]) -> None:
    for name in report_to:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise TrackingError(
                f"--report-to {name} needs the {_PACKAGES[name]} package: pip install {_PACKAGES[name]}"
            )


@dataclass(frozen=True)
class Tracking:
    """The trackers of one run and its log folder."""

    report_to: tuple[str, ...] = ()
    log_dir: Path | None = None  # TensorBoard's files: <log_dir>/<step>

    def trainer_arguments(self, step: str) -> tuple[list[str], list]:
        """(``report_to`` for TrainingArguments, extra callbacks) for training step ``step``.

        TensorBoard gets its own callback writing to ``<log_dir>/<step>`` (the Trainer's default
        folder sits under the checkpoints, which a finished step deletes)."""
        others = [name for name in self.report_to if name != "tensorboard"]
        callbacks = []
        if "tensorboard" in self.report_to:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(self._folder(step)))))
        return others, callbacks

    def log_estep(self, round_index: int, stats: dict, rewards: Sequence[float]) -> None:
        """One round's E-step statistics (restpg.training.em.reward_stats) at step ``round_index``."""
        scalars = {
            f"estep/{name}": float(stats[name])
            for name in ("samples", "kept", "truncated", "reward_mean", "kept_reward_mean", "inputs_with_kept")
        }
        scalars["estep/kept_share"] = stats["kept"] / stats["samples"] if stats["samples"] else 0.0
        if "tensorboard" in self.report_to:
            import numpy
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(self._folder("estep"))) as writer:
                for name, value in scalars.items():
                    writer.add_scalar(name, value, round_index)
                if rewards:
                    writer.add_histogram(
                        "estep/reward",
                        numpy.asarray(rewards, dtype=float),
                        round_index,
                        bins=numpy.linspace(0.0, 1.0, 11),
                    )
        if "wandb" in self.report_to:
            import wandb

            if wandb.run is None:
                wandb.init()
            wandb.log({**scalars, "estep/reward": wandb.Histogram(list(rewards)), "estep/round": round_index})
        if "mlflow" in self.report_to:
            import mlflow

            mlflow.log_metrics({name.replace("/", "_"): value for name, value in scalars.items()}, step=round_index)
        if "trackio" in self.report_to:
            import trackio

            trackio.log({**scalars, "estep/round": round_index})

    def _folder(self, step: str) -> Path:
        if self.log_dir is None:
            raise TrackingError("TensorBoard needs a log folder")
        folder = self.log_dir / step
        folder.mkdir(parents=True, exist_ok=True)
        return folder
