"""The layout of a run folder, in one place. Everything that reads or writes a run (the pipeline,
training, shipping, the page's version list) names its files through these.

    <run>/manifest.json          config, data hash, model ids, library versions
    <run>/timings.json           wall seconds per step (summed over resumes)
    <run>/peak_memory.json       peak memory per step, MiB: resident, and CUDA's where used
    <run>/reasoning.jsonl        stage-1 reasoning paths written by a teacher (cache)
    <run>/judge_cache.jsonl      judge scores (cache)
    <run>/logs/<step>/           TensorBoard files (--report-to tensorboard)
    <run>/sft/, <run>/round-N/   one step each:
        adapter/                 the step's model: a LoRA adapter, or the whole model (full fine-tuning)
        checkpoints/             Trainer checkpoints while it trains (deleted when the adapter is saved)
        checkpoint_selection.json  every validated step and the one kept
        train_result.json        the training's steps, examples, tokens, seconds and tokens/s
        metrics.json             held-out evaluation; the step is finished when it exists
        samples.jsonl            E-step samples (rounds), appended per batch
        estep.done               the E-step finished
        selection.json           what the E-step kept (and what human ratings changed)
        training_set.jsonl       what the M-step trains on: sample ids and weights, fixed when it starts
        human_selection.json     what human ratings dropped or re-weighted, and by whom (--ratings-from)
    <shipped run>/generations.jsonl  stored generations of the shipped versions (assets/models)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

SFT = "sft"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"  # a whole model (full fine-tuning) in a step's adapter folder
MANIFEST = "manifest.json"
TIMINGS = "timings.json"
PEAK_MEMORY = "peak_memory.json"
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
    def train_result(self) -> Path:
        return self.path / "train_result.json"

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

    @property
    def training_set(self) -> Path:
        return self.path / "training_set.jsonl"

    @property
    def human_selection(self) -> Path:
        return self.path / "human_selection.json"


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
    def peak_memory(self) -> Path:
        return self.path / PEAK_MEMORY

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

    def rounds(self) -> list[StepFolder]:
        """The EM rounds present in the folder, in order."""
        found = [(int(m.group(1)), p) for p in self.path.glob("round-*") if (m := STEP_NAME.fullmatch(p.name))]
        return [StepFolder(p) for _, p in sorted(found) if p.is_dir()]

    def run_id(self) -> str:
        """The run's id, under which its E-step samples are rated (``restpg.training.human_selection``):
        the manifest's, or for a manifest written before ids existed, one derived from its contents
        (folder name, config and data hashes, creation time), so that it never changes."""
        try:
            manifest = json.loads(self.manifest.read_text())
        except FileNotFoundError:
            raise InputError(f"{self.path}: no {MANIFEST}; not a run folder") from None
        except json.JSONDecodeError as error:
            raise InputError(f"{self.manifest}: corrupt manifest ({error})") from None
        return manifest.get("run_id") or derive_run_id(self.path.name, manifest)


def derive_run_id(folder_name: str, manifest: dict) -> str:
    """``<folder name>-<8 hex digits of the manifest's config hash, data hash and creation time>``."""
    key = f"{manifest.get('config_hash')}|{manifest.get('data_hash')}|{manifest.get('created')!r}"
    return f"{folder_name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
