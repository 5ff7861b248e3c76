"""The paper's pipeline at small size, for a GPU (and, shrunk, a dry run on a CPU): the precision of
one full-fine-tuning step, then SFT -> E-step -> M-step -> evaluation for each fine-tuning mode and
sampling engine asked for, with the figures a GPU session must report.

    python bench/gpu_round.py --out gpu-round                              # CUDA, the default model
    python bench/gpu_round.py --out /tmp/dry --device cpu --users 1 --samples 2 --steps 2 --engines hf

Prints, and writes to OUT/summary.json:
- the share of weights one Adafactor step at the paper's rate (5e-6) changes: in pure bf16 (the
  failure mode) and with restpg's fp32 master weights under bf16 autocast;
- per run (fine-tuning x engine): E-step tokens/s (new tokens over the E-step's wall time), M-step
  training tokens/s, peak GPU memory, each step's seconds and the round's, the held-out ROUGE-L of
  SFT and of the round, and the round's empty answers.

Every run is the paper preset (Adafactor at 5e-6 for full fine-tuning, the reward-weighted summed
loss, checkpoints chosen by the reward of generated answers) on the shipped sample's three tasks,
with the default model as generator, teacher and judge (the paper's Gemma models need a hub), the
sample's hand-written reasoning paths, ROUGE-L as reward (the 135M judge tells no answer apart), and
the sizes the flags give.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from restpg.inference.models import DEFAULT_MODEL, ModelConfig, resolve_model  # noqa: E402
from restpg.jsonl import read_jsonl  # noqa: E402
from restpg.runs import RunFolder  # noqa: E402
from restpg.training.em import PRESETS, RunControl, load_split, run_em  # noqa: E402
from restpg.training.train import TrainingExample, train_model, trainable_weights, weights_changed_fraction  # noqa: E402

PAPER_RATE = 5e-6


def precision_check(model: str, device: str, examples: list[TrainingExample], out: Path) -> dict:
    """The share of weights one Adafactor step at 5e-6 changes: pure bf16 against fp32 master weights."""
    from transformers import AutoModelForCausalLM
    from transformers.optimization import Adafactor

    from restpg.inference.models import load_tokenizer
    from restpg.training.train import TrainConfig, WeightedCollator, tokenize_examples, weighted_completion_loss

    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    batch = WeightedCollator(tokenizer.pad_token_id)(tokenize_examples(tokenizer, examples, TrainConfig()))
    labels = batch.pop("labels")
    batch.pop("weight")
    batch = {k: v.to(device) for k, v in batch.items()}
    pure = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(device)
    before = trainable_weights(pure)
    optimizer = Adafactor(pure.parameters(), lr=PAPER_RATE, scale_parameter=False, relative_step=False)
    logits = pure(**batch).logits
    weighted_completion_loss(logits[:, :-1], labels[:, 1:].to(device), torch.ones(len(examples)), "sum").backward()
    optimizer.step()
    pure_bf16 = weights_changed_fraction(before, pure)
    del pure, optimizer, logits
    config = dataclasses.replace(
        PRESETS["paper"].sft,
        max_steps=1,
        batch_size=len(examples),
        per_device_batch_size=len(examples),
        select_by="last",
        warmup_steps=0,
    )
    start = trainable_weights(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32))
    dtype = "bfloat16" if device == "cpu" or torch.cuda.is_bf16_supported() else "float16"
    result = train_model(ModelConfig(model=model, device=device, dtype=dtype), examples, config, out / "precision")
    master = weights_changed_fraction(start, AutoModelForCausalLM.from_pretrained(result.adapter_dir))
    return {"pure_bf16": pure_bf16, "master_weights": master, "optimizer": config.optimizer, "rate": PAPER_RATE}


def run_config(args: argparse.Namespace, finetuning: str, engine: str):
    """The paper preset at small size (the flags' sizes), with the given fine-tuning and engine."""
    paper = PRESETS["paper"]
    stage = dataclasses.replace(
        paper.sft,
        finetuning=finetuning,
        max_steps=args.steps,
        save_steps=args.steps,
        batch_size=8,
        per_device_batch_size=8,
        warmup_steps=min(paper.sft.warmup_steps, args.steps // 10),
        validation_examples=args.validation,
        max_input_tokens=1024,
        max_output_tokens=args.new_tokens,
    )
    return dataclasses.replace(
        paper,
        model=args.model,
        teacher_model=args.model,
        judge_model=args.model,
        reasoning_from="sample",
        train_users=args.users,
        eval_users=1,
        rounds=1,
        samples_per_input=args.samples,
        reward="rougeL",
        max_new_tokens=args.new_tokens,
        max_item_words=25,
        sft=stage,
        mstep=stage,
        engine=engine,
        device=args.device,
        generation_batch_size=args.batch_rows,
    )


def figures(run_dir: Path) -> dict:
    """The run's E-step and M-step speeds, memory, times and scores, from its files."""
    run = RunFolder(run_dir)
    timings = json.loads(run.timings.read_text())
    memory = json.loads(run.peak_memory.read_text()) if run.peak_memory.exists() else {}
    samples = read_jsonl(run.round(1).samples)
    mstep = json.loads(run.round(1).train_result.read_text())
    sft_metrics = json.loads(run.sft.metrics.read_text())["summary"]
    round_metrics = json.loads(run.round(1).metrics.read_text())["summary"]
    estep_seconds = timings["round1_estep"]
    round_steps = ("round1_estep", "round1_mstep", "round-1_evaluation")
    return {
        "estep_tokens_per_second": sum(s.get("new_tokens", 0) for s in samples) / estep_seconds,
        "mstep_tokens_per_second": mstep["tokens_per_second"],
        "peak_gpu_gib": max((m.get("cuda", 0.0) for m in memory.values()), default=0.0) / 1024,
        "round_seconds": sum(timings.get(k, 0.0) for k in round_steps),
        "seconds": timings,
        "sft_rougeL": sft_metrics.get("rougeL"),
        "round_rougeL": round_metrics.get("rougeL"),
        "round_empty_answers": round_metrics.get("empty_answers"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs and summary.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--finetuning", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--users", type=int, default=4, help="training users per task")
    parser.add_argument("--samples", type=int, default=32, help="E-step samples per input (paper: 32)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of SFT and of the M-step")
    parser.add_argument("--validation", type=int, default=12, help="validation records a checkpoint is scored on")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batch-rows", type=int, default=256, help="rows per sampling batch")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"device": args.device, "model": args.model, "args": vars(args)}
    if args.device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name(0)
    config = run_config(args, "full", "hf")
    from restpg.training.em import Models, _sft_examples
    from restpg.training.reasoning import SAMPLE_REASONING_FILE, reasoning_from_file

    train = load_split(config, "train", 1)[:4]
    paths = reasoning_from_file(SAMPLE_REASONING_FILE, train, False)
    examples = _sft_examples(config, train, paths, Models(config).count_tokens())
    start = time.perf_counter()
    summary["precision"] = precision_check(args.model, args.device, examples, out)
    print(
        f"weights changed by one Adafactor step at 5e-6: pure bf16 {summary['precision']['pure_bf16']:.1%}, "
        f"fp32 master weights {summary['precision']['master_weights']:.1%} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    summary["runs"] = {}
    for finetuning in args.finetuning:
        for engine in args.engines:
            name = f"{finetuning}-{engine}"
            try:
                run_em(run_config(args, finetuning, engine), out / name, RunControl())
                summary["runs"][name] = figures(out / name)
            except Exception as error:  # a run that fails is reported, the next one still runs
                summary["runs"][name] = {"error": f"{type(error).__name__}: {error}"}
            (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            print(name, json.dumps(summary["runs"][name], default=str), flush=True)
    print("\n| run | E-step tok/s | M-step tok/s | peak GPU GiB | round s | SFT ROUGE-L | round ROUGE-L | empty |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in summary["runs"].items():
        if "error" in row:
            print(f"| {name} | failed: {row['error'][:80]} |")
            continue
        print(
            f"| {name} | {row['estep_tokens_per_second']:.0f} | {row['mstep_tokens_per_second']:.0f} | "
            f"{row['peak_gpu_gib']:.2f} | {row['round_seconds']:.0f} | {row['sft_rougeL']:.4f} | "
            f"{row['round_rougeL']:.4f} | {row['round_empty_answers']:.0%} |"
        )
    return 0 if all("error" not in row for row in summary["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
