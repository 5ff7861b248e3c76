"""REST-PG's pipeline: stage 1 (reasoning data), stage 2 (SFT), stage 3 (ReST-EM rounds).

A run lives in one folder:

    manifest.json          config, data hash, model ids, library versions (checked on resume)
    reasoning.jsonl        stage-1 reasoning paths (cache)
    sft/adapter/           stage 2: the SFT model (round 0)
    sft/metrics.json       its evaluation on held-out records
    round-N/samples.jsonl  E-step: every sample with its reasoning, answer and reward (appended per batch)
    round-N/estep.done     the E-step finished
    round-N/adapter/       M-step: the round's model
    round-N/metrics.json   its evaluation; the round is finished when this exists

Every step is skipped when its output exists, so a killed run resumes from the last finished step
(finished E-step samples are not redone) and a cancelled one keeps every finished round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from ..data.longlamp import PUBLIC_TASKS, SPLIT_FAMILIES, TASKS, Record, load_records, sample_path, task_spec
from ..data.prompts import PromptSettings, reasoning_target
from ..data.retrieval import PAPER_TOP_K
from ..errors import RestpgError
from ..evaluation.evaluate import (
    JUDGE_CUT,
    SCORE_NAMES,
    inference_settings,
    predict,
    prompt_for,
    score_predictions,
    summarize,
)
from ..evaluation.metrics import LexicalMetrics, LexicalReward
from ..evaluation.reward import PAPER_JUDGE_TAU, LexicalRewardModel, LLMJudge, Reward
from ..inference.cancel import Cancelled
from ..inference.hardware import (
    DEVICE_HELP,
    DEVICE_PATTERN,
    DTYPE_HELP,
    DTYPES,
    Precision,
    choose_precision,
    peak_memory_mib,
    pick_device,
    reset_peak_memory,
)
from ..inference.models import (
    DEFAULT_MODEL,
    GenerationSettings,
    LoadedModel,
    ModelConfig,
    ModelError,
    free_memory,
    load_merged,
    load_model,
    load_tokenizer,
    prompt_token_counter,
    resolve_model,
)
from ..inference.vllm_sampling import (
    DEFAULT_MEMORY_FRACTION,
    ENGINES,
    EngineError,
    VLLMConfig,
    VLLMGenerator,
    adapter_rank,
    check_engine,
    lora_rank_slot,
)
from ..jsonl import append_jsonl, read_jsonl, write_json, write_jsonl
from ..options import flag, option_name
from ..runs import ADAPTER_CONFIG, MODEL_CONFIG, RunFolder, StepFolder, derive_run_id
from .human_selection import HumanRule, apply_rule, read_sample_ratings, sample_generation_id
from .reasoning import (
    SAMPLE_REASONING_FILE,
    ReasoningFileError,
    ReasoningSettings,
    cache_key,
    file_teachers,
    read_cache,
    reasoning_from_file,
    reasoning_paths,
)
from .tracking import Tracking, TrackingError, check_installed, parse_report_to
from .train import TrainConfig, TrainingExample, train_model

MANIFEST_VERSION = 1
# What an adapter learned to read and write: a model sampled with other values sees another prompt.
PROMPT_FIELDS = ("model", "reasoning", "k", "max_item_words")
REWARDS = ("judge", "rouge1", "rougeL", "meteor", "lexical-mix")


def _option(name: str) -> str:
    """An EMConfig field as users name it: its flag (``--samples``), else the field."""
    return option_name(EMConfig, name)


class RunError(RestpgError, RuntimeError):
    """A run that cannot go on: incompatible folder, no data, nothing kept. Names the culprit."""


@dataclass(frozen=True)
class EMConfig:
    """Everything a REST-PG run needs. Defaults are the paper's; the cpu-small preset marks its cuts."""

    tasks: tuple[str, ...] = field(  # paper: one model on all tasks (multi-task)
        default=PUBLIC_TASKS,
        metadata=flag(
            "--task",
            "one task, or all (the paper's multi-task)",
            choices=[*PUBLIC_TASKS, "all"],
            convert=lambda task: PUBLIC_TASKS if task == "all" else (task,),
        ),
    )
    # None: the shipped sample; else a LongLaMP source with {split} in its path, or the hub id
    data: str | None = field(
        default=None,
        metadata=flag("--data", "LongLaMP source with {split} (and {task}) in its path, or LongLaMP/LongLaMP"),
    )
    family: str = field(default="user", metadata=flag("--family", "split family", choices=SPLIT_FAMILIES))
    train_split: str = "train"
    eval_split: str = "val"
    train_users: int | None = field(
        default=None, metadata=flag("--users", "training users per task", type=int)
    )  # None: all
    eval_users: int | None = field(default=None, metadata=flag("--eval-users", "held-out users per task", type=int))
    # the generator's base checkpoint (ours: the shipped model; paper preset: Gemma 2B)
    model: str = field(
        default=DEFAULT_MODEL, metadata=flag("--model", "generator base model: default, hub id or folder")
    )
    # stage 1; None: the base model (the paper: an instruction-tuned 7B)
    teacher_model: str | None = field(
        default=None, metadata=flag("--teacher-model", "stage-1 teacher (default: the base model)")
    )
    # Where stage 1's reasoning paths come from: "teacher" (teacher_model writes them, the paper),
    # "sample" (the hand-written reference paths shipped with the sample, REASONING_FILE in
    # data/longlamp_sample/), or a JSONL file of {"record_id", "reasoning", "teacher"} rows, e.g. from
    # a 7B teacher run elsewhere.
    reasoning_from: str = field(
        default="teacher",
        metadata=flag(
            "--reasoning-from",
            "stage-1 reasoning: teacher (the teacher model writes it, the paper), sample "
            "(the hand-written paths shipped with the sample) or a .jsonl file of {record_id, reasoning, "
            "teacher} rows",
        ),
    )
    # Skip stages 1 and 2: start the EM rounds from this SFT adapter folder (e.g. the shipped one).
    sft_adapter: str | None = field(
        default=None,
        metadata=flag("--sft-adapter", "skip stages 1-2: start the EM rounds from this SFT adapter folder"),
    )
    # reward and metric; None: the base model (a weak judge, said in the output)
    judge_model: str | None = field(default=None, metadata=flag("--judge-model", "LLM judge (default: the base model)"))
    reasoning: bool = field(  # False: ReST-EM without reasoning (baseline)
        default=True,
        metadata=flag("--no-reasoning", "ReST-EM without reasoning (baseline)", action="store_const", const=False),
    )
    rounds: int = field(default=3, metadata=flag("--rounds", "EM rounds T (paper: 3)", type=int))  # paper: T = 3
    samples_per_input: int = field(  # paper: m = 32
        default=32, metadata=flag("--samples", "samples per input m (paper: 32)", type=int)
    )
    temperature: float = 0.7  # paper: gamma = 0.7
    top_p: float = 0.95  # paper: nucleus sampling, p not given
    reward: str = field(
        default="judge", metadata=flag("--reward", "paper: judge", choices=REWARDS)
    )  # paper: the LLM judge
    # None: 1.0 for the judge (paper); the quantile rule for lexical rewards
    tau: float | None = field(
        default=None,
        metadata=flag("--tau", "keep threshold in [0, 1] (judge: 1.0; lexical: per-input quantile rule)", type=float),
    )
    tau_quantile: float = 0.75  # lexical rewards: keep samples at or above this per-input quantile
    max_kept_per_input: int = 10  # paper
    # keep E-step samples cut at max_new_tokens (the paper does not say; ours: no)
    keep_truncated: bool = field(
        default=False,
        metadata=flag(
            "--keep-truncated",
            "let the E-step keep samples cut at the token limit (default: dropped, counted)",
            action="store_const",
            const=True,
        ),
    )
    # Human ratings in the E-step's selection (restpg.training.human_selection; not in the paper): the SQLite
    # store whose ratings of this run's samples veto or re-weight them when a round's M-step starts.
    ratings_from: str | None = field(
        default=None,
        metadata=flag(
            "--ratings-from",
            "SQLite store (the app's runs/restpg.db) whose human ratings of this run's E-step samples "
            "steer what each M-step trains on (default: none)",
        ),
    )
    veto_copy: bool = field(
        default=True,
        metadata=flag(
            "--no-veto-copy",
            "with --ratings-from: keep samples a rater flagged as copying the real text",
            action="store_const",
            const=False,
        ),
    )
    veto_faithfulness: int = field(
        default=2,
        metadata=flag(
            "--veto-faithfulness",
            "with --ratings-from: drop samples whose mean faithfulness is at or below this (0: never; default 2)",
            type=int,
        ),
    )
    veto_quorum: int = field(
        default=2,
        metadata=flag(
            "--veto-quorum",
            "with --ratings-from: distinct raters a veto needs (1: any single rater; default 2)",
            type=int,
        ),
    )
    veto_by: str | None = field(
        default=None,
        metadata=flag(
            "--veto-by",
            "with --ratings-from: comma-separated raters whose own rating vetoes alone (e.g. the run's owner)",
        ),
    )
    human_weight: bool = field(
        default=False,
        metadata=flag(
            "--human-weight",
            "with --ratings-from: multiply a rated sample's reward weight by its mean human score / 5",
            action="store_const",
            const=True,
        ),
    )
    # paper: every M-step restarts from the base checkpoint; "previous" continues
    init: str = field(
        default="base", metadata=flag("--init", "M-step start (paper: base)", choices=["base", "previous"])
    )
    # Ours (not in the paper): each M-step also trains on the SFT examples of the training records
    # (the real output, after its reasoning path), weight 1.0: the real text is the output with the
    # highest reward a sample could get, R(y, y) = 1 for the lexical rewards. It anchors the
    # reasoning-then-answer format when a round has few kept samples.
    sft_mix: bool = field(
        default=False,
        metadata=flag(
            "--sft-mix",
            "each M-step also trains on the SFT examples (real outputs, weight 1; ours, not the paper's)",
            action="store_const",
            const=True,
        ),
    )
    k: int = PAPER_TOP_K  # paper: 5 retrieved items
    max_item_words: int | None = field(  # paper: whole items
        default=None, metadata=flag("--max-item-words", "words per profile-item field (paper: whole)", type=int)
    )
    max_new_tokens: int = field(  # paper: outputs up to 1,536 tokens
        default=1536, metadata=flag("--max-new-tokens", "reasoning + answer tokens (paper: 1,536)", type=int)
    )
    reasoning_max_tokens: int = 512  # stage-1 teacher output (the paper does not give it)
    reasoning_max_words: int | None = None  # paper: the whole reasoning in the SFT target
    generation_batch_size: int = field(  # rows per sampling batch (E-step: generation_batch_size // m prompts)
        default=16,
        metadata=flag(
            "--generation-batch",
            "rows per sampling batch: the E-step samples this // m prompts at a time, evaluation this many "
            "records (paper preset: 256, for one GPU; cpu-small: 16)",
            type=int,
        ),
    )
    # What the E-step and the rounds' evaluation sample with: "hf" (transformers, restpg.inference.models) or
    # "vllm" (restpg.inference.vllm_sampling; a CUDA GPU and pip install vllm). The paper does not say.
    engine: str = field(
        default="hf",
        metadata=flag(
            "--engine",
            "E-step and evaluation sampling: hf (transformers, default) or vllm (CUDA GPU, pip install vllm)",
            choices=ENGINES,
        ),
    )
    vllm_memory_fraction: float = field(  # the judge shares the GPU with the engine
        default=DEFAULT_MEMORY_FRACTION,
        metadata=flag(
            "--vllm-memory",
            f"with --engine vllm: the GPU memory share it takes (default {DEFAULT_MEMORY_FRACTION})",
            type=float,
        ),
    )
    sft: TrainConfig = TrainConfig()
    mstep: TrainConfig = TrainConfig()
    device: str = field(default="auto", metadata=flag("--device", DEVICE_HELP))
    dtype: str = field(default="auto", metadata=flag("--dtype", DTYPE_HELP))
    seed: int = 0
    # Where training curves and E-step statistics go: "none", or any of tensorboard, wandb, mlflow,
    # trackio, comma-separated (restpg.training.tracking). The paper does not say; ours: none.
    report_to: str = field(
        default="none",
        metadata=flag(
            "--report-to",
            "training curves and E-step statistics: none (default) or any of tensorboard, "
            "wandb, mlflow, trackio, comma-separated (TensorBoard files in <run-dir>/logs)",
        ),
    )

    def __post_init__(self) -> None:
        """Every value checked; a RunError starts with the field it names ("tau: ...")."""
        for task in self.tasks:
            if task not in PUBLIC_TASKS and task not in TASKS:
                raise RunError(f"{_option('tasks')}: unknown task {task!r}; known: {', '.join(PUBLIC_TASKS)} or all")
            task_spec(task)
        if self.reward not in REWARDS:
            raise RunError(f"{_option('reward')}: unknown reward {self.reward!r}; known: {', '.join(REWARDS)}")
        if self.init not in ("base", "previous"):
            raise RunError(f"{_option('init')}: must be 'base' or 'previous', got {self.init!r}")
        if self.reasoning_from not in ("teacher", "sample") and not self.reasoning_from.endswith(".jsonl"):
            raise RunError(
                f"{_option('reasoning_from')}: must be 'teacher', 'sample' or a .jsonl file, got {self.reasoning_from!r}"
            )
        try:
            parse_report_to(self.report_to)
        except TrackingError as error:
            raise RunError(f"{_option('report_to')}: {error}") from None
        for name, minimum in (
            ("train_users", 1),
            ("eval_users", 1),
            ("rounds", 0),
            ("samples_per_input", 1),
            ("max_kept_per_input", 1),
            ("generation_batch_size", 1),
            ("max_new_tokens", 1),
            ("max_item_words", 1),
            ("k", 1),
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise RunError(f"{_option(name)}: must be a whole number >= {minimum}, got {value!r}")
        if isinstance(self.veto_faithfulness, bool) or self.veto_faithfulness not in range(6):
            raise RunError(f"{_option('veto_faithfulness')}: must be 0-5 (0: off), got {self.veto_faithfulness!r}")
        if (
            isinstance(self.veto_quorum, bool)
            or not isinstance(self.veto_quorum, int)
            or not 1 <= self.veto_quorum <= 100
        ):
            raise RunError(f"{_option('veto_quorum')}: must be a whole number 1-100, got {self.veto_quorum!r}")
        if self.tau is not None and not (isinstance(self.tau, (int, float)) and 0.0 <= self.tau <= 1.0):
            raise RunError(f"{_option('tau')}: must be between 0 and 1, got {self.tau!r}")  # rewards lie in [0, 1]
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise RunError(f"{_option('device')}: must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.engine not in ENGINES:
            raise RunError(f"{_option('engine')}: must be {' or '.join(ENGINES)}, got {self.engine!r}")
        fraction = self.vllm_memory_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise RunError(f"{_option('vllm_memory_fraction')}: must be between 0 and 1 (exclusive), got {fraction!r}")
        if self.dtype not in ("auto", *DTYPES):
            raise RunError(f"{_option('dtype')}: must be auto, {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("model", "teacher_model", "judge_model", "data", "sft_adapter", "ratings_from"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip() or "\x00" in value):
                raise RunError(f"{_option(name)}: must be a non-empty string, got {value!r}")

    @property
    def prompt_kind(self) -> str:
        return "reasoning" if self.reasoning else "rag"

    @property
    def max_input_tokens(self) -> int:
        """The prompt budget of the run, the same for SFT, sampling, the M-step and evaluation: a
        prompt over it loses its lowest-ranked profile items (restpg.data.prompts.fit_prompt)."""
        return min(self.sft.max_input_tokens, self.mstep.max_input_tokens)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def human_rule(self) -> HumanRule | None:
        """The human-ratings rule of the E-step's selection; None without a ratings store."""
        if self.ratings_from is None:
            return None
        vetoers = tuple(name.strip() for name in (self.veto_by or "").split(",") if name.strip())
        return HumanRule(self.veto_copy, self.veto_faithfulness, self.human_weight, self.veto_quorum, vetoers)

    @classmethod
    def from_dict(cls, values: dict) -> EMConfig:
        """A config from its ``to_dict`` (a manifest's); fields added since take their defaults."""
        values = dict(values)
        values["tasks"] = tuple(values["tasks"])
        values["sft"] = TrainConfig(**values["sft"])
        values["mstep"] = TrainConfig(**values["mstep"])
        return cls(**values)


# CPU-forced training: a hundred examples for minutes, not 10,000 steps of 64 for a day. Micro-batches
# of one example (no padding; a cancel waits for at most one example's layer), four per optimizer
# step. Precision is the run's (restpg.inference.hardware: fp32 unless the CPU has native bf16). The loss and
# the checkpoint rule are the paper's: -log p of the whole target weighted by the reward, and the
# checkpoint whose answers to a fixed sample of validation records score best.
_CPU_SFT = TrainConfig(
    learning_rate=2e-3,
    optimizer="adamw_torch",  # CPU-forced: few steps need AdamW's fast start
    warmup_steps=2,
    min_lr_ratio=0.0,  # ours: decay to 0, as the shipped versions were trained (paper: to 0.1)
    num_epochs=5.0,
    batch_size=4,
    per_device_batch_size=1,
    max_input_tokens=768,
    max_output_tokens=320,
    save_steps=None,  # CPU-forced: validated once an epoch (paper: every 1,000 steps)
    validation_examples=18,  # CPU-forced: 18 validation records (paper: 1,024)
    lora_r=8,
    lora_alpha=16,
)
_CPU_MSTEP = dataclasses.replace(_CPU_SFT, num_epochs=2.0)

# The paper's models (PAPER.md, "Training and inference settings", stages 1 and 3): a Gemma 2B
# generator whose every M-step restarts from the pre-trained checkpoint, an instruction-tuned Gemma
# 7B as stage-1 teacher and as judge. Hub ids; a GPU user with hub access runs them as named.
PAPER_GENERATOR = "google/gemma-2b"
PAPER_TEACHER = "google/gemma-7b-it"
PAPER_JUDGE = "google/gemma-7b-it"

PRESETS: dict[str, EMConfig] = {
    # Every other value is EMConfig's and TrainConfig's default, the paper's (top_p 0.95 is ours: the
    # paper does not give p). Full fine-tuning at 5e-6, as the paper; --finetuning lora for an adapter.
    "paper": EMConfig(
        model=PAPER_GENERATOR,
        teacher_model=PAPER_TEACHER,
        judge_model=PAPER_JUDGE,
        sft=TrainConfig(finetuning="full"),
        mstep=TrainConfig(finetuning="full"),
        # ours (the paper does not say): 8 prompts x m = 32 rows per batch. On an H200 (bf16) one
        # prompt's 32 rows a batch sampled 1,347 tokens/s, 256 rows 11,233 and 512 rows 20,631
        # (bench/gpu_check.sh; docs/training.md, "On a GPU"). 256 rows of Gemma 2B's cache at the paper's
        # lengths (5,120 + 1,536 tokens) take about 31 GB: with the 7B judge, an 80 GB GPU holds it.
        generation_batch_size=256,
    ),
    "cpu-small": EMConfig(
        tasks=PUBLIC_TASKS,  # paper: one model on all tasks
        train_users=None,  # the sample's 12 training users per task
        eval_users=None,  # the sample's held-out users: 4 per task in val, 10 in test
        rounds=2,  # CPU-forced: paper T = 3
        samples_per_input=8,  # CPU-forced: paper m = 32
        init="previous",  # ours, measured: README "Results on the sample" (paper: a fresh model from the base)
        max_item_words=25,  # CPU-forced: paper uses whole profile items
        max_new_tokens=256,  # CPU-forced: paper 1,536 (reasoning + answer)
        reasoning_from="sample",  # CPU-forced: the 135M base model is too weak a teacher (hand-written paths)
        reasoning_max_tokens=96,  # CPU-forced: a short bullet list (when a teacher writes them)
        reasoning_max_words=60,  # CPU-forced: reasoning + answer must fit in 256 new tokens
        reward="rougeL",  # CPU-forced: the 135M base model is a weak judge; --reward judge uses it anyway
        sft=_CPU_SFT,
        mstep=_CPU_MSTEP,
    ),
}
# One small EM round a visitor starts from the page on a CPU (the Train tab's default), from an SFT
# adapter (the shipped one): cpu-small at the size of a live demo, under ten minutes on 2 cores
# without native bf16 (docs/results.md, "A round from the page").
PRESETS["cpu-round"] = dataclasses.replace(
    PRESETS["cpu-small"],
    train_users=2,  # CPU-forced: 2 training users per task (18 requests)
    rounds=1,  # CPU-forced: one round (paper: T = 3)
    samples_per_input=4,  # CPU-forced: m = 4 (paper: 32)
    # ours: 36 rows a batch (9 prompts x m = 4 in the E-step, the 36 validation records at once in the
    # evaluation): a fp32 decoding step here costs ~63 ms + 2.7 ms a row, so fewer, fuller batches
    generation_batch_size=36,
    # ours: one epoch at a quarter of the rate continues the SFT adapter gently: a few dozen kept
    # samples cannot retrain it (measured: docs/results.md, "A round from the page"). One epoch is one
    # checkpoint, which the paper's rule has nothing to choose among.
    mstep=dataclasses.replace(_CPU_MSTEP, num_epochs=1.0, learning_rate=5e-4),
    # ours: the M-step also trains on the 18 training records' real outputs after their reasoning
    # paths (weight 1), which anchors the reasoning-then-answer format that ~20 kept samples alone
    # let drift (measured: docs/results.md, "A round from the page").
    sft_mix=True,
)


def default_preset() -> str:
    """paper on CUDA, cpu-small on a CPU (the Train tab proposes cpu-round there)."""
    import torch

    return "paper" if torch.cuda.is_available() else "cpu-small"


# ----------------------------------------------------------------------------------------------
# Run folder bookkeeping


def _config_hash(config: EMConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _records_hash(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.record_id.encode())
        digest.update(record.output.encode())
    return digest.hexdigest()[:16]


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from .. import __version__

    return {
        "restpg": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


@contextlib.contextmanager
def _timed(run_dir: Path, name: str):
    """Adds the step's wall time to run_dir/timings.json (summed over resumes) and its peak memory
    to run_dir/peak_memory.json (MiB, the highest over resumes)."""
    start = time.perf_counter()
    reset_peak_memory()
    try:
        yield
    finally:
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch the main process keeps them
            run = RunFolder(run_dir)
            timings = json.loads(run.timings.read_text()) if run.timings.exists() else {}
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
            write_json(run.timings, timings)
            memory = json.loads(run.peak_memory.read_text()) if run.peak_memory.exists() else {}
            before = memory.get(name, {})
            memory[name] = {kind: max(mib, before.get(kind, 0.0)) for kind, mib in peak_memory_mib().items()}
            write_json(run.peak_memory, memory)


# Config fields a resume may set anew: how a run uses the machine (not what it computes), and the
# number of rounds (a finished run goes on with more; no earlier step depends on it).
OPERATIONAL_FIELDS = ("vllm_memory_fraction", "rounds")


def check_manifest(run_dir: Path, config: EMConfig, data_hash: str) -> dict:
    """Create the manifest, or check that an existing run folder belongs to this config and data."""
    path = RunFolder(run_dir).manifest
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "config": config.to_dict(),
        "config_hash": _config_hash(config),
        "data_hash": data_hash,
        "models": {
            "base": config.model,
            "teacher": reasoning_source(config),
            "judge": config.judge_model or config.model,
        },
        "versions": _versions(),
        "created": time.time(),
    }
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise RunError(f"{path}: corrupt manifest ({error}); move the folder away to start afresh") from None
        current = json.loads(json.dumps(config.to_dict()))  # tuples read back as lists
        defaults = json.loads(json.dumps(EMConfig().to_dict()))
        # A field added since the run was made counts as unchanged while it has its default value;
        # operational fields (how much GPU memory the engine takes) may change on a resume.
        changed = sorted(
            k
            for k, v in current.items()
            if k not in OPERATIONAL_FIELDS and old.get("config", {}).get(k, defaults.get(k)) != v
        )
        if old.get("config_hash") != manifest["config_hash"] and changed:
            raise RunError(
                f"{run_dir} holds a run with another config (differs in: {', '.join(changed) or '?'}); "
                "use another --run-dir or the same settings"
            )
        if old.get("data_hash") != data_hash:
            raise RunError(f"{run_dir} holds a run on other data (data hash {old.get('data_hash')} != {data_hash})")
        moved = [k for k in OPERATIONAL_FIELDS if old.get("config", {}).get(k, defaults.get(k)) != current.get(k)]
        if moved and os.environ.get("RANK", "0") == "0":  # the manifest tells the run as it now goes on
            old.setdefault("config", {}).update({k: current[k] for k in moved})
            old["config_hash"] = manifest["config_hash"]
            write_json(path, old)
        return old
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest["run_id"] = derive_run_id(run_dir.name, manifest)
    write_json(path, manifest)
    return manifest


def _record_in_manifest(run_dir: Path, key: str, round_index: int, value: dict) -> None:
    """Adds ``value`` under ``manifest[key][round]`` (the main process only)."""
    if os.environ.get("RANK", "0") != "0":
        return
    path = RunFolder(run_dir).manifest
    manifest = json.loads(path.read_text())
    manifest.setdefault(key, {})[str(round_index)] = value
    write_json(path, manifest)


# ----------------------------------------------------------------------------------------------
# Models a run needs


def needed_models(config: EMConfig) -> dict[str, tuple[str, str]]:
    """{role: (model, the option that names it)} for every model the run will load."""
    needed = {"generator": (config.model, "--model")}
    if config.reasoning and config.sft_adapter is None and reasoning_file(config) is None:
        needed["stage-1 teacher"] = (config.teacher_model or config.model, "--teacher-model")
    needed["judge"] = (config.judge_model or config.model, "--judge-model")  # evaluation uses it, whatever the reward
    return needed


def check_models(config: EMConfig) -> None:
    """Fails in seconds, naming the role, the model and the option to pass another, when a model
    the run needs cannot be found (a hub id without a hub, a missing folder), instead of hours in."""
    from transformers import AutoConfig

    from ..inference.models import resolve_model

    for role, (name, option) in needed_models(config).items():
        try:
            AutoConfig.from_pretrained(resolve_model(name))
        except (OSError, ValueError, ModelError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RunError(
                f"the {role} {name!r} cannot be loaded here ({first_line}). Download it where the hub "
                f"is reachable (huggingface-cli download {name}) and pass its folder, or name another "
                f"model: {option} <hub id or folder> (e.g. {option} {DEFAULT_MODEL})"
            ) from None


# ----------------------------------------------------------------------------------------------
# Data


def load_split(config: EMConfig, split: str, users: int | None) -> list[Record]:
    records: list[Record] = []
    for task in config.tasks:
        if config.data is None:
            source = sample_path(task, config.family, split)
        elif "{split}" in config.data or "{task}" in config.data:
            source = config.data.format(split=split, task=task)
        else:
            source = config.data
        loaded = load_records(source, task, config.family, split)
        keep = set(loaded.users()[:users]) if users is not None else None
        records.extend(r for r in loaded.records if keep is None or r.user_id in keep)
    if not records:
        raise RunError(f"no usable records in split {split!r} of {', '.join(config.tasks)}")
    return records


# ----------------------------------------------------------------------------------------------
# Progress and cancellation


@dataclass
class RunControl:
    """What the caller sees and steers: progress callback (stage, done, total) and a cancel flag."""

    on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None
    on_round: Callable[[int, dict], None] = lambda round_index, metrics: None
    cancel: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")


class _Counter:
    def __init__(self, control: RunControl, stage: str, total: int):
        self.control, self.stage, self.total, self.done = control, stage, total, 0
        control.on_progress(stage, 0, total)

    def __call__(self, n: int) -> None:
        self.done += n
        self.control.on_progress(self.stage, self.done, self.total)
        self.control.check()


# ----------------------------------------------------------------------------------------------
# Selection


def select_samples(samples: list[dict], config: EMConfig) -> list[dict]:
    """The E-step's keep rule: reward >= tau, non-empty answer (and reasoning, for REST-PG), not cut
    at the token limit (unless ``keep_truncated``), at most max_kept_per_input per input.

    tau: for the judge, config.tau or the paper's 1.0 (only top-score outputs). For lexical
    rewards (continuous in [0, 1]): config.tau as an absolute threshold when given, else each
    input keeps the samples at or above its own ``tau_quantile`` quantile (and above 0), so a round
    never keeps nothing merely because the scale is different.
    """
    by_input: dict[str, list[dict]] = {}
    for sample in samples:
        # REST-PG trains on reasoning + answer: a sample that skipped the reasoning is not kept. A
        # sample cut at the token limit would teach the model to stop mid-sentence.
        if sample.get("truncated") and not config.keep_truncated:
            continue
        if sample["answer"].strip() and (sample["reasoning"].strip() or not config.reasoning):
            by_input.setdefault(sample["record_id"], []).append(sample)
    kept = []
    for rows in by_input.values():
        rewards = sorted(r["reward"] for r in rows)
        if config.reward == "judge":
            threshold = PAPER_JUDGE_TAU if config.tau is None else config.tau
        elif config.tau is not None:
            threshold = config.tau
        else:
            position = min(len(rewards) - 1, int(config.tau_quantile * (len(rewards) - 1) + 0.5))
            threshold = max(rewards[position], 1e-9)
        passing = sorted((r for r in rows if r["reward"] >= threshold), key=lambda r: -r["reward"])
        kept.extend(passing[: config.max_kept_per_input])
    return kept


# ----------------------------------------------------------------------------------------------
# The pipeline


def _holds_whole_model(step_adapter: Path) -> bool:
    """Whether a step's adapter folder holds a whole model (full fine-tuning), not a LoRA adapter."""
    return (step_adapter / MODEL_CONFIG).exists() and not (step_adapter / ADAPTER_CONFIG).exists()


@dataclass
class Models:
    """The models a run loads once: generator base (with adapters), judge, lexical metrics."""

    config: EMConfig
    _generator: LoadedModel | None = None
    _generator_source: Path | None = None  # the adapter (or whole model) folder it holds; None: the base
    _judge: LLMJudge | None = None
    _metrics: LexicalMetrics | None = None
    _tokenizer: object | None = None
    _engine: VLLMGenerator | None = None  # engine "vllm": the one engine the E-step and evaluation sample with

    def model_config(self, name: str | None = None) -> ModelConfig:
        return ModelConfig(model=name or self.config.model, device=self.config.device, dtype=self.config.dtype)

    def generator(self, adapter: Path | None) -> LoadedModel:
        """The base model with ``adapter`` merged into its weights (None: the base alone; a step
        trained with full fine-tuning holds a whole model, loaded in place of the base). One model
        at a time: a step samples from one adapter, and a merged model samples faster than one with
        its adapter attached (restpg.inference.models.load_merged); another adapter loads the base again."""
        if self._generator is not None and self._generator_source == adapter:
            return self._generator
        self._generator = None
        free_memory()
        if adapter is not None and _holds_whole_model(adapter):
            self._generator = load_model(self.model_config(str(adapter)))
        elif adapter is None:
            self._generator = load_model(self.model_config())
        else:
            self._generator = load_merged(self.model_config(), adapter)
        self._generator_source = adapter
        return self._generator

    def sampler(self, adapter: Path | None) -> LoadedModel | VLLMGenerator:
        """What the E-step and the evaluation sample with: the generator with ``adapter`` merged
        (engine "hf"), or a vLLM engine on the base model sampling with ``adapter`` as its LoRA
        request (engine "vllm"; a step trained with full fine-tuning gets an engine on its model)."""
        if self.config.engine == "hf":
            return self.generator(adapter)
        whole = adapter is not None and _holds_whole_model(adapter)
        model = resolve_model(str(adapter) if whole else self.config.model, self.model_config().cache_dir)
        ranks = [] if whole else [c.lora_r for c in (self.config.sft, self.config.mstep) if c.finetuning == "lora"]
        if adapter is not None and not whole:
            ranks.append(adapter_rank(adapter))
        engine = self._engine
        held = engine.config.lora_rank if engine is not None else None
        if engine is None or engine.name != model or (ranks and (held is None or max(ranks) > lora_rank_slot(held))):
            if engine is not None:
                engine.close()
            self._engine = self._generator = None  # the judge stays: a caller may hold it
            free_memory()
            precision = choose_precision(self.config.dtype, pick_device(self.config.device))
            self._engine = engine = VLLMGenerator(
                VLLMConfig(
                    model=model,
                    dtype=str(precision.dtype).removeprefix("torch."),
                    max_model_len=self.config.max_input_tokens + self.config.max_new_tokens,
                    lora_rank=max(ranks) if ranks else None,
                    memory_fraction=self.config.vllm_memory_fraction,
                    seed=self.config.seed,
                )
            )
        engine.use_adapter(None if whole else adapter)
        return engine

    def tokenizer(self):
        """The generator's tokenizer, loaded once (without the model)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(resolve_model(self.config.model, self.model_config().cache_dir))
        return self._tokenizer

    def count_tokens(self) -> Callable[[str], int]:
        """Counts a prompt's tokens as the generator reads it: the run's prompt budget is in these."""
        return prompt_token_counter(self.tokenizer())

    def release(self) -> None:
        """Drop the generator and the judge (reloaded when next needed): training loads its own copy
        of the base model, and on a GPU a 7B judge beside it is memory the M-step needs."""
        if self._generator is None and self._judge is None and self._engine is None:
            return
        if self._engine is not None:
            self._engine.close()
        self._generator = self._judge = self._engine = None
        free_memory()

    def metrics(self) -> LexicalMetrics:
        if self._metrics is None:
            self._metrics = LexicalMetrics()
        return self._metrics

    def judge(self, cache_file: Path) -> LLMJudge:
        if self._judge is None:
            loaded = load_model(self.model_config(self.config.judge_model))
            self._judge = LLMJudge(loaded, cache_file=cache_file)
        return self._judge

    def reward(self, cache_file: Path) -> Reward:
        if self.config.reward == "judge":
            return self.judge(cache_file)
        weights = {"lexical-mix": {"rouge1": 1.0, "rougeL": 1.0, "meteor": 1.0}}.get(
            self.config.reward, {self.config.reward: 1.0}
        )
        return LexicalRewardModel(self.metrics(), LexicalReward(weights))


def clip_reasoning(reasoning: str, max_words: int | None) -> str:
    """The reasoning within max_words: whole when it fits, else its first lines (bullets), the last
    of them cut to its first sentences; at least one piece, cut if it is longer. Lines stay lines."""
    if max_words is None or len(reasoning.split()) <= max_words:
        return reasoning.strip()
    kept, count = [], 0
    for line in (line for line in reasoning.strip().splitlines() if line.strip()):
        sentences = [p for p in re.split(r"(?<=[.!?])\s+", line.strip()) if p.strip()]
        parts = []
        for sentence in sentences:
            words = len(sentence.split())
            if (kept or parts) and count + words > max_words:
                break
            parts.append(sentence if words <= max_words else " ".join(sentence.split()[:max_words]))
            count += min(words, max_words)
        if parts:
            kept.append(" ".join(parts))
        if len(parts) < len(sentences) or count >= max_words:
            break
    return "\n".join(kept)


def _sft_examples(
    config: EMConfig, records: Sequence[Record], reasoning: dict | None, count_tokens: Callable[[str], int]
) -> list[TrainingExample]:
    """Stage 2's training set: the prompt the E-step and evaluation will sample with (the same
    budget rule), and the reasoning target (or the real output alone, without reasoning)."""
    settings = PromptSettings(max_item_words=config.max_item_words)
    examples = []
    for record in records:
        _, prompt = prompt_for(record, config.prompt_kind, config.k, settings, count_tokens, config.max_input_tokens)
        if reasoning is None:
            completion = record.output
        else:
            path = reasoning[record.record_id]
            if not path.reasoning:
                continue  # nothing usable from the teacher (all copied or empty)
            completion = reasoning_target(clip_reasoning(path.reasoning, config.reasoning_max_words), record.output)
        examples.append(TrainingExample(prompt, completion, 1.0, record.record_id))
    if not examples:
        raise RunError("stage 1 produced no usable reasoning for any record (all empty or copies of the output)")
    return examples


def e_step(
    models: Models, config: EMConfig, records: Sequence[Record], adapter: Path, round_dir: Path, control: RunControl
) -> list[dict]:
    """Sample m outputs per input with the current model, score each answer, append to samples.jsonl.

    Inputs go in fixed batches, each sampled with its own seed (run seed, round, batch position):
    a resumed E-step skips the finished batches and redoes a torn one, and ends with exactly the
    samples an uninterrupted run has.
    """
    step = StepFolder(round_dir)
    samples_file, done_marker = step.samples, step.estep_done
    order = {r.record_id: n for n, r in enumerate(records)}

    def in_order(rows: list[dict]) -> list[dict]:  # inputs in data order, samples by index
        return sorted(rows, key=lambda row: (order[row["record_id"]], int(row["sample_id"].rsplit(":", 1)[1])))

    if done_marker.exists():
        return in_order(read_jsonl(samples_file))
    rank, world = process_rank()
    round_index = int(round_dir.name.split("-")[-1])
    per_batch = max(1, config.generation_batch_size // config.samples_per_input)
    batches = [list(records[i : i + per_batch]) for i in range(0, len(records), per_batch)]
    rows_by_record: dict[str, list[dict]] = {}
    for row in [*read_jsonl(samples_file), *(r for shard in _shards(round_dir) for r in read_jsonl(shard))]:
        rows_by_record.setdefault(row["record_id"], []).append(row)

    def finished(batch: list[Record]) -> bool:
        return all(len(rows_by_record.get(r.record_id, [])) == config.samples_per_input for r in batch)

    kept_rows = [row for batch in batches if finished(batch) for r in batch for row in rows_by_record[r.record_id]]
    round_dir.mkdir(parents=True, exist_ok=True)
    _barrier()  # every rank has read the finished batches before the main process rewrites them
    if rank == 0:
        # Rewrite the file with the finished batches only (drops a torn or partial batch), atomically.
        write_jsonl(samples_file, kept_rows)
        for shard in _shards(round_dir):
            shard.unlink()
    _barrier()
    # Under accelerate launch, rank r samples batches r, r + N, ... into its own shard file; the
    # main process merges them. Seeds are per batch, so the samples are those of one process.
    own_file = samples_file if world == 1 else round_dir / f"samples.rank-{rank}.jsonl"
    counter = _Counter(control, f"{round_dir.name}: E-step sampling", len(records))
    prompt_settings = PromptSettings(max_item_words=config.max_item_words)
    loaded = reward = None
    all_rows = list(kept_rows)
    for index, batch in enumerate(batches):
        if finished(batch) or index % world != rank:
            counter(len(batch))
            continue
        if loaded is None:
            loaded = models.sampler(adapter)
            reward = models.reward(RunFolder(round_dir.parent).judge_cache)
        settings = GenerationSettings(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            num_samples=config.samples_per_input,
            batch_size=per_batch,
            max_input_tokens=config.max_input_tokens,
            seed=config.seed + 100_003 * round_index + index,
        )
        predictions = predict(
            loaded, batch, config.prompt_kind, settings, config.k, prompt_settings, cancel=control.cancel
        )
        flat = [(record, i, p) for record, preds in zip(batch, predictions) for i, p in enumerate(preds)]
        pairs = ([r.input for r, _, _ in flat], [r.output for r, _, _ in flat], [p.answer for _, _, p in flat])
        rewards = reward(*pairs)
        cut = reward.cut(*pairs) if hasattr(reward, "cut") else [False] * len(flat)  # the judge's window
        rows = [
            {
                "sample_id": f"{round_dir.name}:{p.record_id}:{i}",
                "record_id": p.record_id,
                "task": record.task,
                "user_id": record.user_id,
                "request": record.input,
                "reference": record.output,
                "model_version": adapter.parent.name,
                "prompt": p.prompt,
                "retrieved_ids": list(p.retrieved_ids),
                "text": p.text,
                "reasoning": p.reasoning,
                "answer": p.answer,
                "truncated": p.truncated,
                "new_tokens": p.generation.new_tokens,
                "reward": float(value),
                "judge_prompt_cut": bool(was_cut),
                "reward_name": reward.name,
            }
            for (record, i, p), value, was_cut in zip(flat, rewards, cut)
        ]
        append_jsonl(own_file, rows)
        all_rows.extend(rows)
        counter(len(batch))
    if world > 1:
        _barrier()
        if rank == 0:
            all_rows = [*kept_rows, *(r for shard in _shards(round_dir) for r in read_jsonl(shard))]
            write_jsonl(samples_file, in_order(all_rows))
            done_marker.write_text(f"{len(all_rows)} samples from {world} processes\n")
            for shard in _shards(round_dir):
                shard.unlink()
        _barrier()
        return in_order(read_jsonl(samples_file))
    done_marker.write_text(f"{len(all_rows)} samples\n")
    return in_order(all_rows)


def _shards(round_dir: Path) -> list[Path]:
    return sorted(round_dir.glob("samples.rank-*.jsonl"))


def process_rank() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) unless under accelerate launch / torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier() -> None:
    """Wait for every process (no-op for one)."""
    if process_rank()[1] > 1:
        import torch
        from accelerate import PartialState

        # cpu=True where there is no GPU: without it accelerate does not join CPU processes (gloo)
        # and, created first here, would leave the Trainer's data-parallel state unjoined too.
        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def evaluate_round(
    models: Models,
    config: EMConfig,
    records: Sequence[Record],
    adapter: Path | None,
    cache_file: Path,
    control: RunControl,
    stage: str,
) -> dict:
    """Predict (the paper's inference) and score every held-out record. Records go in fixed batches,
    each with its own seed; under accelerate launch rank r takes batches r, r + N, ... and the rows
    are gathered on every process, so the result is the one of a single process."""
    rank, world = process_rank()
    loaded = models.sampler(adapter)
    size = config.generation_batch_size
    batches = [list(records[i : i + size]) for i in range(0, len(records), size)]
    counter = _Counter(control, f"{stage}: evaluation", len(records))
    judge = models.judge(cache_file)
    mine: list[tuple[int, list[dict]]] = []
    for index, batch in enumerate(batches):
        if index % world != rank:
            counter(len(batch))
            continue
        settings = inference_settings(config.max_new_tokens, size, config.seed + index, config.max_input_tokens)
        predictions = predict(
            loaded,
            batch,
            config.prompt_kind,
            settings,
            config.k,
            PromptSettings(max_item_words=config.max_item_words),
            cancel=control.cancel,
        )
        answers = [p[0].answer for p in predictions]
        scores = score_predictions(batch, answers, models.metrics(), judge)
        mine.append(
            (
                index,
                [
                    {"record_id": r.record_id, "reasoning": p[0].reasoning, "answer": p[0].answer, **row}
                    for r, p, row in zip(batch, predictions, scores)
                ],
            )
        )
        counter(len(batch))
    per_record = [row for _, rows in sorted(_gather(mine)) for row in rows]
    summary = summarize([{name: row[name] for name in SCORE_NAMES if name in row} for row in per_record])
    summary["empty_answers"] = sum(1 for row in per_record if not row["answer"].strip()) / len(per_record)
    summary["judge_prompts_cut"] = int(sum(row.get(JUDGE_CUT, 0.0) for row in per_record))  # of len(per_record)
    return {
        "summary": summary,
        "per_record": per_record,
        "judge": judge.name,
        "metrics_variant": models.metrics().variant,
    }


def _gather(items: list) -> list:
    """Every process's ``items``, concatenated, on every process (itself alone without accelerate)."""
    if process_rank()[1] == 1:
        return items
    import torch.distributed

    _barrier()  # joins the processes (gloo on CPUs) if nothing did before

    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def training_set(
    step: StepFolder, kept: Sequence[dict], config: EMConfig, run_id: str
) -> tuple[list[dict], dict | None]:
    """What the round's M-step trains on: rows ``{sample_id, reward, weight}``, and the report of
    what human ratings changed (None without ``ratings_from``).

    Fixed when the M-step first starts (``training_set.jsonl``, written by the main process before
    training): a resumed M-step reuses it, so ratings saved after that moment change nothing. Before
    it, the ratings present at this call apply (``restpg.training.human_selection``).
    """
    if not step.training_set.exists():
        rule = config.human_rule
        if rule is None:
            rows = [{"sample_id": s["sample_id"], "reward": s["reward"], "weight": s["reward"]} for s in kept]
            report = None
        else:
            ids = [sample_generation_id(run_id, s["sample_id"]) for s in kept]
            ratings = read_sample_ratings(config.ratings_from, ids)
            rows, report = apply_rule(kept, ratings, rule, run_id)
            report["ratings_from"] = str(config.ratings_from)
        if process_rank()[0] == 0:
            if report is not None:  # the report first: a training set on disk always has its report
                write_json(step.human_selection, report)
            write_jsonl(step.training_set, rows)
        _barrier()
    rows = read_jsonl(step.training_set)
    report = json.loads(step.human_selection.read_text()) if step.human_selection.exists() else None
    return rows, report


def reward_stats(samples: Sequence[dict], kept: Sequence[dict]) -> dict:
    rewards = [s["reward"] for s in samples]
    bins = [0] * 10
    for value in rewards:
        bins[min(9, int(value * 10))] += 1
    return {
        "samples": len(samples),
        "kept": len(kept),
        "truncated": sum(1 for s in samples if s.get("truncated")),
        "reward_mean": sum(rewards) / max(1, len(rewards)),
        "kept_reward_mean": sum(s["reward"] for s in kept) / max(1, len(kept)),
        "reward_histogram": bins,
        "inputs_with_kept": len({s["record_id"] for s in kept}),
        "judge_prompts_cut": sum(1 for s in samples if s.get("judge_prompt_cut")),  # over the judge's window
    }


def run_em(config: EMConfig, run_dir: Path, control: RunControl | None = None) -> dict[int, dict]:
    """Stages 1-3; returns {round: metrics} (round 0 is the SFT model). Resumes from run_dir."""
    control = control or RunControl()
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    train = load_split(config, config.train_split, config.train_users)
    held_out = load_split(config, config.eval_split, config.eval_users)
    check_models(config)
    try:
        check_engine(config.engine, config.device, process_rank()[1])
    except EngineError as error:
        raise RunError(str(error)) from None
    tracking = Tracking(parse_report_to(config.report_to), run.logs)
    try:
        check_installed(tracking.report_to)
    except TrackingError as error:
        raise RunError(str(error)) from None
    check_manifest(run_dir, config, _records_hash(train) + _records_hash(held_out))
    models = Models(config)
    judge_cache = run.judge_cache
    results: dict[int, dict] = {}

    # Stage 1: reasoning paths (REST-PG only), from a teacher model or a file
    reasoning = None
    sft = run.sft
    if config.sft_adapter is not None:  # stages 1-2 done elsewhere (e.g. the shipped SFT adapter)
        previous = Path(config.sft_adapter)
        results[0] = _start_metrics(models, config, held_out, previous, judge_cache, control, run_dir)
    else:
        if config.reasoning:
            reasoning = stage1_reasoning(models, config, train, run_dir, control, "stage 1: reasoning paths")

        # Stage 2: SFT (round 0)
        if not sft.trained:
            control.check()
            count_tokens = models.count_tokens()
            examples = _sft_examples(config, train, reasoning, count_tokens)
            selection = _checkpoint_selection(config.sft, models, config, held_out, run_dir, control, count_tokens)
            control.on_progress("stage 2: SFT", 0, 1)
            with _timed(run_dir, "stage2_sft"):
                train_model(
                    models.model_config(),
                    examples,
                    config.sft,
                    sft.path,
                    on_step=lambda step, total, logs: control.on_progress("stage 2: SFT", step, total),
                    cancel=control.cancel,
                    tracking=tracking,
                    **selection,
                )
        results[0] = _evaluate_once(models, config, held_out, sft.path, judge_cache, control, "SFT")
        previous = sft.adapter
    control.on_round(0, results[0])

    # Stage 3: EM rounds
    for t in range(1, config.rounds + 1):
        step = run.round(t)
        round_dir = step.path
        if not step.trained:
            with _timed(run_dir, f"round{t}_estep"):  # every process samples its share
                samples = e_step(models, config, train, previous, round_dir, control)
            kept = select_samples(samples, config)
            stats = reward_stats(samples, kept)
            training, human = training_set(step, kept, config, run.run_id())
            if human is not None:
                stats["human"] = human
                summary = {k: v for k, v in human.items() if k not in ("dropped_samples", "reweighted_samples")}
                _record_in_manifest(run_dir, "human_selection", t, summary)
            write_json(step.selection, stats)
            if os.environ.get("RANK", "0") == "0":
                tracking.log_estep(t, stats, [s["reward"] for s in samples])
            if not kept:
                raise RunError(
                    f"round {t}: no sample passed the threshold ({stats['samples']} samples, mean reward "
                    f"{stats['reward_mean']:.3f}); lower --tau or use a lexical reward's quantile rule. "
                    f"Rounds before {t} are intact in {run_dir}"
                )
            if not training:
                raise RunError(
                    f"round {t}: the human ratings vetoed every kept sample ({len(kept)}); see "
                    f"{step.selection}. Rounds before {t} are intact in {run_dir}"
                )
            by_id = {s["sample_id"]: s for s in kept}
            examples = [
                TrainingExample(
                    by_id[row["sample_id"]]["prompt"],
                    reasoning_target(by_id[row["sample_id"]]["reasoning"], by_id[row["sample_id"]]["answer"])
                    if config.reasoning
                    else by_id[row["sample_id"]]["answer"],
                    row["weight"],
                    row["sample_id"],
                )
                for row in training
            ]
            init = previous if config.init == "previous" else None
            models.release()  # sampling and scoring are over until the round's evaluation
            count_tokens = models.count_tokens()
            if config.sft_mix:
                if config.reasoning and reasoning is None:  # rounds started from an SFT adapter
                    reasoning = stage1_reasoning(models, config, train, run_dir, control, "stage 1: reasoning paths")
                examples += _sft_examples(config, train, reasoning, count_tokens)
            selection = _checkpoint_selection(config.mstep, models, config, held_out, run_dir, control, count_tokens)
            control.on_progress(f"round-{t}: M-step", 0, 1)
            with _timed(run_dir, f"round{t}_mstep"):
                train_model(
                    models.model_config(),
                    examples,
                    config.mstep,
                    round_dir,
                    init_adapter=init,
                    on_step=lambda step, total, logs, t=t: control.on_progress(f"round-{t}: M-step", step, total),
                    cancel=control.cancel,
                    tracking=tracking,
                    **selection,
                )
        results[t] = _evaluate_once(models, config, held_out, round_dir, judge_cache, control, f"round-{t}")
        results[t]["selection"] = json.loads(step.selection.read_text())
        control.on_round(t, results[t])
        previous = step.adapter
    return results


def stage1_reasoning(
    models: Models,
    config: EMConfig,
    records: Sequence[Record],
    run_dir: Path,
    control: RunControl,
    stage: str,
    missing_ok: bool = False,
) -> dict:
    """Stage 1: the reasoning path of each record, from the run's file or written by the teacher
    (cached in run_dir/reasoning.jsonl). ``missing_ok``: records a file does not cover are left out."""
    path = reasoning_file(config)
    if path is not None:
        try:
            return reasoning_from_file(path, records, missing_ok)
        except ReasoningFileError as error:
            raise RunError(str(error)) from None
    cache = RunFolder(run_dir).reasoning
    teacher_name = config.teacher_model or config.model  # the name its paths are cached under
    cached = read_cache(cache)
    keys = {r.record_id: cache_key(r.record_id, teacher_name) for r in records}
    if all(key in cached for key in keys.values()):  # all written before: no teacher to load
        return {record_id: cached[key] for record_id, key in keys.items()}
    teacher = (
        models.generator(None)
        if config.teacher_model in (None, config.model)
        else load_model(models.model_config(config.teacher_model))
    )
    settings = ReasoningSettings(
        k=config.k,
        prompt=PromptSettings(max_item_words=config.max_item_words),
        generation=GenerationSettings(
            max_new_tokens=config.reasoning_max_tokens,
            temperature=0.0,
            batch_size=config.generation_batch_size,
            max_input_tokens=config.max_input_tokens,
        ),
    )
    rank, world = process_rank()
    with _timed(run_dir, "stage1_reasoning"):
        if world > 1:  # rank r writes the paths of records r, r + N, ... into its own cache shard
            todo = [r for r in records if keys[r.record_id] not in cached]
            shard = cache.with_name(f"reasoning.rank-{rank}.jsonl")
            reasoning_paths(teacher, todo[rank::world], shard, settings, cancel=control.cancel)
            _barrier()
            if rank == 0:  # the main process merges the shards into the run's cache
                for part in sorted(cache.parent.glob("reasoning.rank-*.jsonl")):
                    append_jsonl(cache, read_jsonl(part))
                    part.unlink()
            _barrier()
        paths = reasoning_paths(
            teacher, records, cache, settings, on_batch=_Counter(control, stage, len(records)), cancel=control.cancel
        )
    del teacher  # the teacher's memory goes before training
    models.release()
    return paths


def validation_records(config: EMConfig, held_out: Sequence[Record], count: int) -> list[Record]:
    """The fixed sample checkpoints are validated on (paper: 1,024 sampled validation examples):
    seeded by the run, in data order."""
    if count >= len(held_out):
        return list(held_out)
    chosen = set(random.Random(config.seed).sample(range(len(held_out)), count))
    return [record for n, record in enumerate(held_out) if n in chosen]


def _checkpoint_selection(
    stage: TrainConfig,
    models: Models,
    config: EMConfig,
    held_out: Sequence[Record],
    run_dir: Path,
    control: RunControl,
    count_tokens,
) -> dict:
    """train_model's validation arguments for ``stage.select_by``: validation examples (the SFT
    targets of the validation records, for the loss) or a function scoring generated answers with
    the run's reward; nothing for "last"."""
    if stage.select_by == "last":
        return {}
    records = validation_records(config, held_out, stage.validation_examples)
    if stage.select_by == "loss":
        reasoning = (
            stage1_reasoning(models, config, records, run_dir, control, "validation reasoning paths", missing_ok=True)
            if config.reasoning
            else None
        )
        covered = [r for r in records if reasoning is None or r.record_id in reasoning]
        examples = _sft_examples(config, covered, reasoning, count_tokens) if covered else []
        if not examples:
            raise RunError(
                f"select_by 'loss': none of the {len(records)} validation records has a reasoning path "
                f"({reasoning_source(config)}); pass --select-by reward or last, or a reasoning file "
                "that covers validation records"
            )
        return {"validation": examples}
    settings = inference_settings(
        config.max_new_tokens, config.generation_batch_size, config.seed, config.max_input_tokens
    )
    prompt_settings = PromptSettings(max_item_words=config.max_item_words)
    tokenizer = models.tokenizer()
    reward = models.reward(RunFolder(run_dir).judge_cache)

    def validate(model) -> float:
        parameter = next(model.parameters())
        loaded = LoadedModel(
            name=config.model,
            model=model,
            tokenizer=tokenizer,
            device=parameter.device,
            precision=Precision(parameter.dtype, "the model in training"),
        )
        answers = [
            p[0].answer
            for p in predict(
                loaded, records, config.prompt_kind, settings, config.k, prompt_settings, cancel=control.cancel
            )
        ]
        return fmean(reward([r.input for r in records], [r.output for r in records], answers))

    return {"validate": validate}


def reasoning_file(config: EMConfig) -> Path | None:
    """The file stage 1 reads its reasoning paths from; None when a teacher model writes them."""
    if config.reasoning_from == "teacher":
        return None
    return SAMPLE_REASONING_FILE if config.reasoning_from == "sample" else Path(config.reasoning_from)


def reasoning_source(config: EMConfig) -> str:
    """Who wrote the stage-1 reasoning, in words (run manifest, the page)."""
    if not config.reasoning:
        return "none (no reasoning)"
    if config.sft_adapter is not None:
        return f"as in the SFT adapter's run ({config.sft_adapter})"
    path = reasoning_file(config)
    if path is None:
        return f"teacher model {config.teacher_model or config.model}"
    return f"{file_teachers(path) or 'unknown'} (file {path.name})"


def _start_metrics(
    models: Models, config: EMConfig, held_out, adapter: Path, judge_cache: Path, control: RunControl, run_dir: Path
) -> dict:
    """Round 0 of a run started from an existing SFT adapter: the adapter's own metrics when they
    were taken on these held-out records, else an evaluation (saved in run_dir/sft/metrics.json)."""
    from ..inference.models import check_adapter_folder

    try:
        check_adapter_folder(adapter)
    except ModelError as error:
        raise RunError(f"sft_adapter: {error}") from None
    manifest_file = RunFolder.of_adapter(adapter).manifest
    if manifest_file.exists():  # the adapter must have learned the prompt this run samples with
        trained = json.loads(manifest_file.read_text()).get("config", {})
        for name in PROMPT_FIELDS:
            if name in trained and trained[name] != getattr(config, name):
                raise RunError(
                    f"sft_adapter {adapter} was trained with {name} = {trained[name]!r}, this run has "
                    f"{getattr(config, name)!r}: use the same setting"
                )
    own = StepFolder(adapter.parent).metrics
    if own.exists():
        metrics = json.loads(own.read_text())
        if sorted(row["record_id"] for row in metrics.get("per_record", [])) == sorted(r.record_id for r in held_out):
            write_json(RunFolder(run_dir).sft.metrics, metrics)
    metrics_file = RunFolder(run_dir).sft.metrics
    if not metrics_file.exists():
        with _timed(run_dir, "sft_evaluation"):
            write_json(metrics_file, evaluate_round(models, config, held_out, adapter, judge_cache, control, "SFT"))
    return json.loads(metrics_file.read_text())


def _evaluate_once(
    models: Models, config: EMConfig, records, step_dir: Path, judge_cache: Path, control: RunControl, stage: str
) -> dict:
    metrics_file = StepFolder(step_dir).metrics
    if not metrics_file.exists():  # every process evaluates its share; the main one writes the result
        with _timed(step_dir.parent, f"{step_dir.name}_evaluation"):
            result = evaluate_round(models, config, records, StepFolder(step_dir).adapter, judge_cache, control, stage)
        if process_rank()[0] == 0:
            write_json(metrics_file, result)
        _barrier()
    return json.loads(metrics_file.read_text())
