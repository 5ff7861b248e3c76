"""The layout of a run folder, in one place. Everything that reads or writes a run (the pipeline,
training, shipping, the page's version list) names its files through these.

    <run>/manifest.json          config, data hash, model ids, library versions
    <run>/timings.json           wall seconds per step (summed over resumes)
    <run>/reasoning.jsonl        stage-1 reasoning paths written by a teacher (cache)
    <run>/judge_cache.jsonl      judge scores (cache)
    <run>/logs/<step>/           TensorBoard files (--report-to tensorboard)
    <run>/sft/, <run>/round-N/   one step each:
        adapter/                 the step's model: a LoRA adapter, or the whole model (full fine-tuning)
        checkpoints/             Trainer checkpoints while it trains (deleted when the adapter is saved)
        checkpoint_selection.json  every validated step and the one kept
        metrics.json             held-out evaluation; the step is finished when it exists
        samples.jsonl            E-step samples (rounds), appended per batch
        estep.done               the E-step finished
        selection.json           what the E-step kept
    <shipped run>/generations.jsonl  stored generations of the shipped versions (assets/models)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SFT = "sft"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"  # a whole model (full fine-tuning) in a step's adapter folder
MANIFEST = "manifest.json"
TIMINGS = "timings.json"
METRICS = "metrics.json"
SELECTION = "selection.json"
GENERATIONS = "generations.jsonl"
STEP_NAME = re.compile(r"sft|round-(\d+)")


def round_name(t: int) -> str:
    """The step name of EM round ``t``; round 0 is the SFT step."""
    return f"round-{t}" if t else SFT


@dataclass(frozen=True)
class StepFolder:
    """One step of a run: the SFT model or an EM round."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def trained(self) -> bool:
        """The step's model is saved (a LoRA adapter, or a whole model with full fine-tuning)."""
        return (self.adapter / ADAPTER_CONFIG).exists() or (self.adapter / MODEL_CONFIG).exists()

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoint_selection(self) -> Path:
        return self.path / "checkpoint_selection.json"

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def samples(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def estep_done(self) -> Path:
        return self.path / "estep.done"

    @property
    def selection(self) -> Path:
        return self.path / SELECTION


@dataclass(frozen=True)
class RunFolder:
    """A run's folder and the files at its top."""

    path: Path

    @classmethod
    def of_adapter(cls, adapter: Path) -> RunFolder:
        """The run an adapter folder (``<run>/<step>/adapter``) belongs to."""
        return cls(Path(adapter).parent.parent)

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def timings(self) -> Path:
        return self.path / TIMINGS

    @property
    def reasoning(self) -> Path:
        return self.path / "reasoning.jsonl"

    @property
    def judge_cache(self) -> Path:
        return self.path / "judge_cache.jsonl"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def generations(self) -> Path:
        return self.path / GENERATIONS

    @property
    def sft(self) -> StepFolder:
        return StepFolder(self.path / SFT)

    def round(self, t: int) -> StepFolder:
        """EM round ``t`` (0: the SFT step)."""
        return StepFolder(self.path / round_name(t))

    def step(self, name: str) -> StepFolder:
        return StepFolder(self.path / name)
