"""Fine-tuning on prompt -> completion with per-example weights (the SFT stage and the M-step).

The loss is the paper's objective: each example's weight (1 for SFT, the reward R in the M-step)
times its negative log-likelihood -log p(y | x, P), the sum over the completion's tokens
(``TrainConfig.loss`` "sum"; "mean" takes each example's per-token mean instead, ours), averaged
over the examples of the optimizer step. The average is over the whole step, whatever its
micro-batches and processes: the same gradient for 1 x 4, 4 x 1 and 2 processes x 2, and for a
last step with fewer or unequal micro-batches.

Precision: LoRA adapters train in fp32 over a base in the run's precision (bf16 on CUDA); full
fine-tuning keeps fp32 master weights and computes in bf16 (or fp16) autocast where the run's
precision is 16-bit. In pure bf16 an update at the paper's rate (5e-6) is below half a unit in the
last place of most weights and rounds away (:func:`weights_changed_fraction`).

Training runs through transformers' ``Trainer`` (gradient accumulation, checkpoints, resume,
progress bar); on several GPUs the same code runs under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.prompts import PromptTooLongError
from ..errors import InputError
from ..inference.cancel import cancel_hooks
from ..inference.hardware import Precision, choose_precision, pick_device
from ..inference.models import ModelConfig, chat_text, free_memory, load_tokenizer, resolve_model
from ..jsonl import write_json
from ..options import flag, option_name
from ..runs import StepFolder
from .lora_dropout import use_bulk_lora_dropout
from .tracking import Tracking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingExample:
    prompt: str  # the user turn (wrapped in the chat template here)
    completion: str  # the target the model learns to write
    weight: float = 1.0  # 1 for SFT; the reward in the M-step
    example_id: str = ""


SELECT_BY = ("loss", "reward", "last")
FINETUNING = ("lora", "full")
LOSSES = ("sum", "mean")
PAPER_FULL_LEARNING_RATE = 5e-6  # paper: Appendix B
LORA_LEARNING_RATE = 2e-4  # ours: a LoRA adapter needs a larger rate than all weights


@dataclass(frozen=True)
class TrainConfig:
    """One M-step / SFT run. Defaults are the paper's (Appendix B) unless marked."""

    # "full": every weight trains (the paper); "lora": a LoRA adapter (ours; small enough to ship)
    finetuning: str = field(
        default="lora",
        metadata=flag(
            "--finetuning",
            "full: every weight trains (the paper, at 5e-6; the paper preset's choice); "
            "lora: a LoRA adapter (cpu-small; small enough to ship and to show in the app)",
            choices=["lora", "full"],
        ),
    )
    learning_rate: float | None = None  # None: the paper's 5e-6 for full fine-tuning, 2e-4 for LoRA (ours)
    # The per-example loss: "sum" over the completion's tokens, -log p(y | x, P) (the paper's
    # objective, R * log p); "mean": the per-token mean, every example counting the same whatever
    # its length (ours).
    loss: str = field(
        default="sum",
        metadata=flag(
            "--loss",
            "per-example loss: sum (-log p of the whole completion, weighted by the reward: the paper) or "
            "mean (its per-token mean: ours)",
            choices=list(LOSSES),
        ),
    )
    optimizer: str = "adafactor"  # paper: Adafactor
    warmup_steps: int = 250  # paper
    min_lr_ratio: float = 0.1  # paper: linear decay to 0.1 of the peak rate
    max_steps: int = 10_000  # paper: at most 10,000 steps per iteration
    num_epochs: float | None = None  # when set, bounds training by epochs as well (CPU presets)
    batch_size: int = 64  # paper: 64 = per_device_batch_size * gradient_accumulation * devices
    per_device_batch_size: int = 8
    weight_decay: float = 0.01  # paper
    max_grad_norm: float = 1.0  # paper
    max_input_tokens: int = 5120  # paper
    max_output_tokens: int = 1536  # paper
    lora_r: int = 16  # ours: the paper fine-tunes all weights
    lora_alpha: int = 32
    lora_dropout: float = field(
        default=0.05,  # ours
        metadata=flag(
            "--lora-dropout",
            "LoRA dropout (ours: 0.05; on a CPU its masks are drawn in bulk, restpg.training.lora_dropout, and are "
            "still about 8%% of a training step's operators: 0 trains faster still; bench/bench.py)",
            type=float,
            metavar="P",
        ),
    )
    save_steps: int | None = 1000  # paper: checkpoints validated every 1,000 steps; None: once an epoch
    # Which checkpoint the step keeps. Paper: every save_steps, answers generated for a fixed sample
    # of validation records are scored with the run's reward, and the best checkpoint is kept
    # ("reward"). "loss": the lowest loss on the validation records' SFT targets (ours); "last": the
    # last step, nothing validated (ours).
    select_by: str = field(
        default="reward",
        metadata=flag(
            "--select-by",
            "checkpoint kept: reward (the run's reward on answers generated for validation records, the "
            "paper's), loss (lowest loss on their SFT targets, ours) or last (nothing validated, ours)",
            choices=["loss", "reward", "last"],
        ),
    )
    validation_examples: int = 1024  # paper: 1,024 sampled validation examples
    seed: int = 0

    def __post_init__(self) -> None:
        """Every value in its range; a value out of it is an InputError naming the option (its flag
        where it has one) and the range, from the CLI and the page alike."""

        def refuse(name: str, allowed: str):
            value = getattr(self, name)
            raise InputError(f"{option_name(type(self), name)}: must be {allowed}, got {value!r}")

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def whole(value, minimum: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

        for name, choices in (("finetuning", FINETUNING), ("loss", LOSSES), ("select_by", SELECT_BY)):
            if getattr(self, name) not in choices:
                refuse(name, "one of " + ", ".join(choices))
        if not isinstance(self.optimizer, str) or not self.optimizer.strip():
            refuse("optimizer", "a transformers optimizer name (adafactor, adamw_torch, ...)")
        if not number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            refuse("lora_dropout", "in [0, 1)")
        if self.learning_rate is not None and (not number(self.learning_rate) or not 0 < self.learning_rate <= 1):
            refuse("learning_rate", "in (0, 1]")
        if not number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            refuse("min_lr_ratio", "in [0, 1]")
        if self.num_epochs is not None and (not number(self.num_epochs) or self.num_epochs <= 0):
            refuse("num_epochs", "a positive number of epochs")
        for name in ("weight_decay", "max_grad_norm"):
            if not number(getattr(self, name)) or getattr(self, name) < 0:
                refuse(name, "a number >= 0")
        for name, minimum in (
            ("warmup_steps", 0),
            ("max_steps", 1),
            ("batch_size", 1),
            ("per_device_batch_size", 1),
            ("max_input_tokens", 1),
            ("max_output_tokens", 1),
            ("lora_r", 1),
            ("lora_alpha", 1),
            ("validation_examples", 0),
            ("seed", 0),
        ):
            if not whole(getattr(self, name), minimum):
                refuse(name, f"a whole number >= {minimum}")
        if self.save_steps is not None and not whole(self.save_steps, 1):
            refuse("save_steps", "a whole number >= 1, or None (once an epoch)")

    @property
    def rate(self) -> float:
        """The learning rate: the one given, else the paper's for full fine-tuning or ours for LoRA."""
        if self.learning_rate is not None:
            return self.learning_rate
        return PAPER_FULL_LEARNING_RATE if self.finetuning == "full" else LORA_LEARNING_RATE

    @property
    def gradient_accumulation_steps(self) -> int:
        return max(1, math.ceil(self.batch_size / (self.per_device_batch_size * _world_size())))

    def steps_per_epoch(self, examples: int) -> int:
        """Optimizer steps in one pass over ``examples``, counting the examples every process takes."""
        return math.ceil(examples / (self.per_device_batch_size * self.gradient_accumulation_steps * _world_size()))


def _world_size() -> int:
    """Processes training together (accelerate launch / torchrun); 1 alone."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    examples: int
    train_tokens: int  # prompt + completion tokens seen, all epochs
    seconds: float
    final_loss: float | None
    log_history: list[dict] = field(default_factory=list)
    selected_step: int | None = None  # the step whose checkpoint was kept (None: the last, nothing validated)
    selected_metric: float | None = None  # its validation loss or reward

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds else 0.0


def tokenize_examples(tokenizer, examples: Sequence[TrainingExample], config: TrainConfig) -> list[dict]:
    """input_ids / labels (-100 on the prompt) / weight for each example. A prompt over
    ``config.max_input_tokens`` is refused (:class:`PromptTooLongError` naming the example)."""
    rows = []
    for number, example in enumerate(examples):
        prompt_ids = tokenizer(chat_text(tokenizer, example.prompt), add_special_tokens=False)["input_ids"]
        if len(prompt_ids) > config.max_input_tokens:  # never cut: the header and the request would go
            raise PromptTooLongError(
                f"training example {example.example_id or number}: its prompt has {len(prompt_ids)} tokens, the "
                f"limit is {config.max_input_tokens}; build prompts with restpg.evaluation.evaluate.prompt_for and a budget "
                "(its lowest-ranked profile items give way)"
            )
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        if len(completion_ids) < config.max_output_tokens:
            completion_ids = completion_ids + [tokenizer.eos_token_id]  # the model learns to stop here
        else:  # cut at the limit: no end-of-sequence, the text goes on
            completion_ids = completion_ids[: config.max_output_tokens]
        rows.append(
            {
                "input_ids": prompt_ids + completion_ids,
                "labels": [-100] * len(prompt_ids) + completion_ids,
                "weight": float(example.weight),
            }
        )
    return rows


@dataclass
class WeightedCollator:
    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)

        def pad(values, fill):
            return [v + [fill] * (width - len(v)) for v in values]

        return {
            "input_ids": torch.tensor(pad([r["input_ids"] for r in rows], self.pad_token_id)),
            "attention_mask": torch.tensor(pad([[1] * len(r["input_ids"]) for r in rows], 0)),
            "labels": torch.tensor(pad([r["labels"] for r in rows], -100)),
            "weight": torch.tensor([r["weight"] for r in rows], dtype=torch.float32),
        }


def predicted_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is a completion token in any row: the only logits the loss needs.

    The prompt (most of each example) gets no logits at all, which saves the vocabulary projection
    there (49k x 576 per token for SmolLM2, 256k x 2048 for Gemma) and its memory.
    """
    return torch.nonzero((labels[:, 1:] != -100).any(dim=0)).flatten()


def example_losses(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Each example's negative log-likelihood of its completion: the sum over its tokens
    (``reduction`` "sum", -log p(y | x)) or their mean ("mean").

    ``logits[:, i]`` predicts ``targets[:, i]``; targets of -100 (prompt, padding) are ignored.
    """
    token_loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view(targets.shape)
    mask = (targets != -100).float()
    summed = (token_loss * mask).sum(dim=1)
    return summed if reduction == "sum" else summed / mask.sum(dim=1).clamp(min=1)


def weighted_completion_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    reduction: str = "mean",
    examples: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    """sum over the batch of weight * (the example's completion loss, :func:`example_losses`), divided
    by ``examples`` (the examples of the whole optimizer step; default: this batch's)."""
    per_example = example_losses(logits, targets, reduction)
    total = (per_example * weight.to(per_example.device)).sum()
    return total / (len(per_example) if examples is None else examples)


def _trainer_class():
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """Trainer whose loss weights each example (reward-weighted likelihood for the M-step).

        A step's loss is sum(weight * example loss) over all its examples, on every process, divided
        by their number (counted in ``get_batch_samples`` and summed over the processes): each
        micro-batch adds its share, so the gradient is the same however the step is cut, and the
        Trainer divides by nothing more (``loss_is_scaled_for_ga``). Data-parallel training averages
        the processes' gradients, so each process's share is multiplied by their number.
        """

        loss_is_scaled_for_ga = True
        validate_fn: Callable | None = None  # select_by "reward": model -> mean reward (higher is better)
        loss_reduction: str = "sum"

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches = []
            for _ in range(num_batches):
                try:
                    batches.append(next(epoch_iterator))
                except StopIteration:
                    break
            examples = torch.tensor(float(sum(len(batch["weight"]) for batch in batches)), device=device)
            if self.accelerator.num_processes > 1:
                examples = self.accelerator.reduce(examples, reduction="sum")
            return batches, examples

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if self.validate_fn is None:  # validation loss: the Trainer's own loop over compute_loss
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            was_training = self.model.training
            self.model.eval()
            try:
                with preserved_random_state():  # generating must not change training's random draws
                    metrics = {f"{metric_key_prefix}_reward": float(self.validate_fn(self.model))}
            finally:
                self.model.train(was_training)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight = inputs.pop("weight")
            labels = inputs.pop("labels")
            positions = predicted_positions(labels)
            outputs = model(**inputs, logits_to_keep=positions)
            targets = labels[:, positions + 1]
            if model.training and num_items_in_batch is not None:  # a training step: its share of the step
                share = self.accelerator.num_processes / num_items_in_batch
                loss = weighted_completion_loss(outputs.logits, targets, weight, self.loss_reduction, 1.0) * share
            else:  # validation: this batch's mean
                loss = weighted_completion_loss(outputs.logits, targets, weight, self.loss_reduction)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


@contextlib.contextmanager
def preserved_random_state():
    """Runs the block and puts back the random state of Python, NumPy and torch (CPU and CUDA) as it
    was: a validation that samples with its own seeds leaves training's random draws unchanged."""
    import random

    import numpy

    python_state, numpy_state = random.getstate(), numpy.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            numpy.random.set_state(numpy_state)


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights an optimizer step should move: the trainable ones, less the token
    embeddings (tied to the output head in many models), whose rows for the tokens a batch lacks
    get no gradient."""
    embeddings = model.get_input_embeddings().weight
    return {
        name: parameter.detach().cpu().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter is not embeddings
    }


def weights_changed_fraction(before: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    """The share of the weights in ``before`` (:func:`trainable_weights`, taken before training) whose
    value ``model`` now holds differs: about 1 after an optimizer step, far less where the updates
    round away (pure bf16 at the paper's rate)."""
    changed = total = 0
    for name, parameter in model.named_parameters():
        if name in before:
            changed += int((parameter.detach().cpu() != before[name]).sum())
            total += parameter.numel()
    return changed / max(1, total)


def _schedule(config: TrainConfig, max_steps: int, warmup: int) -> dict:
    """The learning-rate schedule: linear warm-up, then linear decay to ``min_lr_ratio`` of the peak
    (the paper: 0.1), through transformers' warmup-stable-decay schedule with no stable phase; a
    ratio of 0 is the plain linear schedule."""
    if config.min_lr_ratio <= 0:
        return {"lr_scheduler_type": "linear"}
    kwargs = {
        "num_decay_steps": max(1, max_steps - warmup),
        "decay_type": "linear",
        "min_lr_ratio": config.min_lr_ratio,
    }
    return {"lr_scheduler_type": "warmup_stable_decay", "lr_scheduler_kwargs": kwargs}


def _progress_callback(on_step: Callable[[int, int, dict], None]):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            on_step(state.global_step, state.max_steps, dict(logs or {}))

    return Progress()


def build_trainable_model(
    model_config: ModelConfig, train_config: TrainConfig, precision: Precision, init_adapter: Path | None = None
):
    """The model to train and the base model's path: the base with a trainable LoRA adapter (new,
    or continued from ``init_adapter``), or with full fine-tuning the base itself (or the model
    saved in ``init_adapter``), every weight trainable.

    Trainable weights are fp32 whatever ``precision``: with full fine-tuning the whole model (its
    master weights; the Trainer computes in ``precision`` by autocast, :func:`mixed_precision`),
    with LoRA the adapter over a base held in ``precision``."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    path = resolve_model(model_config.model, model_config.cache_dir)
    if train_config.finetuning == "full":
        source = str(init_adapter) if init_adapter is not None else path
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32), path
    base = AutoModelForCausalLM.from_pretrained(path, dtype=precision.dtype)
    if init_adapter is not None:
        model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
    else:
        set_seed(train_config.seed)  # the adapter's random initialisation is the same on every run
        lora = LoraConfig(
            r=train_config.lora_r,
            lora_alpha=train_config.lora_alpha,
            lora_dropout=train_config.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
    for parameter in model.parameters():  # peft keeps adapters in fp32 under a 16-bit base: made sure
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    use_bulk_lora_dropout(model)  # the same dropout, its CPU masks drawn in bulk (restpg.training.lora_dropout)
    return model, path


def mixed_precision(train_config: TrainConfig, precision: Precision, device: torch.device) -> dict[str, bool]:
    """The Trainer's autocast flags: full fine-tuning computes in the run's 16-bit precision over fp32
    master weights (CUDA and CPU alike); LoRA in bf16 autocast on CUDA (its adapter is fp32 there, its
    base bf16), and in the base's own precision on a CPU."""
    sixteen = precision.dtype in (torch.bfloat16, torch.float16)
    if train_config.finetuning == "full" and sixteen:
        return {"bf16": precision.dtype == torch.bfloat16, "fp16": precision.dtype == torch.float16}
    return {"bf16": precision.dtype == torch.bfloat16 and device.type == "cuda", "fp16": False}


def train_model(
    model_config: ModelConfig,
    examples: Sequence[TrainingExample],
    config: TrainConfig,
    output_dir: Path,
    init_adapter: Path | None = None,
    on_step: Callable[[int, int, dict], None] | None = None,
    cancel: threading.Event | None = None,
    tracking: Tracking = Tracking(),
    validation: Sequence[TrainingExample] = (),
    validate: Callable[[torch.nn.Module], float] | None = None,
) -> TrainResult:
    """Train a LoRA adapter (or, with ``config.finetuning`` "full", every weight) and save the step's
    model to ``output_dir/adapter`` (written atomically): the adapter, or the whole model (its fp32
    master weights: a step continued from it, ``init_adapter``, loses none of their updates).

    Device and precision are ``model_config``'s (restpg.inference.hardware chooses them for "auto").
    Trainer checkpoints go to ``output_dir/checkpoints``; a rerun after a crash or a cancel resumes
    from the last one. ``cancel`` set stops training at the next decoder layer (forward or backward)
    with :class:`restpg.inference.cancel.Cancelled`. A finished adapter is never overwritten: delete it to retrain.
    ``tracking`` sends the training logs (loss, learning rate, gradient norm) to the run's trackers.

    Checkpoint selection (``config.select_by``): every ``save_steps`` steps the model is validated,
    on the loss of ``validation`` (weight 1) or by ``validate(model)`` (the mean reward of its
    answers), and the best checkpoint is the adapter saved; ``last`` keeps the last step.
    """
    from transformers import TrainingArguments

    if not examples:
        raise ValueError("no training examples")
    if any(not math.isfinite(e.weight) or e.weight < 0 for e in examples):
        raise ValueError("example weights must be finite and non-negative")
    step = StepFolder(output_dir)
    adapter_dir = step.adapter
    if step.trained:
        raise FileExistsError(f"{adapter_dir} exists already (a finished run); delete it to train again")
    device = pick_device(model_config.device)
    precision = choose_precision(model_config.dtype, device)
    log.info("training on %s in %s (%s)", device, precision.name, precision.reason)
    model, path = build_trainable_model(model_config, config, precision, init_adapter)
    tokenizer = load_tokenizer(path)
    rows = tokenize_examples(tokenizer, examples, config)
    steps_per_epoch = config.steps_per_epoch(len(rows))
    max_steps = config.max_steps
    if config.num_epochs is not None:
        max_steps = min(max_steps, max(1, math.ceil(steps_per_epoch * config.num_epochs)))
    checkpoints = step.checkpoints
    report_to, tracker_callbacks = tracking.trainer_arguments(output_dir.name)
    every = min(config.save_steps or steps_per_epoch, max_steps)
    warmup = min(config.warmup_steps, max(0, max_steps - 1))
    selection: dict = {}
    eval_rows = None
    if config.select_by == "loss":
        if not validation:
            raise ValueError("select_by 'loss' needs validation examples (or select_by 'last')")
        eval_rows = [dict(row, weight=1.0) for row in tokenize_examples(tokenizer, validation, config)]
        selection = dict(metric_for_best_model="eval_loss", greater_is_better=False)
    elif config.select_by == "reward":
        if validate is None:
            raise ValueError("select_by 'reward' needs a validate function (or select_by 'last')")
        eval_rows = [{"unused": 0}]  # the Trainer wants an eval set; evaluate() calls validate instead
        selection = dict(metric_for_best_model="eval_reward", greater_is_better=True)
    single = bool(selection) and max_steps <= every  # one checkpoint: nothing to choose, so nothing validated
    if single:
        selection, eval_rows = {}, None
    if selection:
        selection.update(
            eval_strategy="steps",
            eval_steps=every,
            load_best_model_at_end=True,
            prediction_loss_only=True,
            per_device_eval_batch_size=config.per_device_batch_size,
            label_names=["labels"],
        )
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.rate,
        warmup_steps=warmup,
        **_schedule(config, max_steps, warmup),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optimizer,
        logging_steps=1,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        seed=config.seed,
        **mixed_precision(config, precision, device),
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        report_to=report_to,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **selection,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=eval_rows,
        data_collator=WeightedCollator(tokenizer.pad_token_id),
        callbacks=tracker_callbacks + ([_progress_callback(on_step)] if on_step else []),
    )
    trainer.validate_fn = validate if config.select_by == "reward" else None
    trainer.loss_reduction = config.loss
    resume = checkpoints.exists() and any(checkpoints.glob("checkpoint-*"))
    start = time.perf_counter()
    with cancel_hooks(model, cancel):
        output = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - start
    if trainer.is_world_process_zero():  # under accelerate launch, one process writes
        staging = output_dir / ".adapter-staging"
        shutil.rmtree(staging, ignore_errors=True)
        trainer.model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        os.replace(staging, adapter_dir)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the adapter is final: checkpoints served resume only
    trainer.accelerator.wait_for_everyone()
    tokens_per_step = sum(len(r["input_ids"]) for r in rows) / max(1, steps_per_epoch)
    best = trainer.state.best_model_checkpoint
    result = TrainResult(
        adapter_dir=adapter_dir,
        steps=output.global_step,
        examples=len(rows),
        train_tokens=int(tokens_per_step * output.global_step),
        seconds=seconds,
        final_loss=output.training_loss,
        log_history=list(trainer.state.log_history),
        selected_step=int(best.rsplit("-", 1)[1]) if best else None,
        selected_metric=trainer.state.best_metric if best else None,
    )
    if trainer.is_world_process_zero():
        validated = [
            {"step": h["step"], **{k: v for k, v in h.items() if k in ("eval_loss", "eval_reward")}}
            for h in result.log_history
            if "eval_loss" in h or "eval_reward" in h
        ]
        write_json(
            step.train_result,
            {
                "steps": result.steps,
                "examples": result.examples,
                "train_tokens": result.train_tokens,
                "seconds": result.seconds,
                "tokens_per_second": result.tokens_per_second,
                "precision": precision.name,
                "finetuning": config.finetuning,
            },
        )
        write_json(
            step.checkpoint_selection,
            {
                "select_by": config.select_by,
                "steps": result.steps,
                "selected_step": result.selected_step,
                "selected_metric": result.selected_metric,
                "validated": validated,
                **(
                    {"note": "one checkpoint (the last step): nothing to choose among, not validated"} if single else {}
                ),
            },
        )
    del trainer, model, output
    free_memory()  # the model, its optimizer state and freed activations: before the next step loads models
    return result
