"""Where the judge's and the M-step's time goes, by torch operator (torch.profiler), on the real
default model. Prints the operators with the most self time and their share; asserts nothing.

    .venv/bin/python bench/profile_ops.py [--dtype float32] [--only judge mstep]

judge: 16 pairs of the E-step's shape (4 answers per request), batches of 8, prefixes shared.
mstep: two optimizer steps of cpu-small's M-step (LoRA r = 8, 4 examples of one at a time per step,
personalized prompts of k = 5 items cut to 25 words, reasoning + review completions).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench import judge_workloads, machine_summary, training_config, training_examples
from restpg.evaluation.reward import LLMJudge
from restpg.inference.models import ModelConfig, load_model
from restpg.training.train import train_model


def report(title: str, prof, seconds: float, rows: int) -> None:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{title}: {seconds:.1f} s wall; operators by self time (share of all operators' self time)")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]:
        print(
            f"  {event.key:<40} {event.self_cpu_time_total / 1e6:7.2f} s  {event.self_cpu_time_total / total:6.1%}"
            f"  calls {event.count}"
        )


def profile_judge(args) -> None:
    loaded = load_model(ModelConfig(dtype=args.dtype))
    LLMJudge(loaded, batch_size=1).score(["warm"], ["up"], ["pass"])
    instructions, references, answers = judge_workloads(16, 4)["m = 4 answers per request (E-step)"]
    judge = LLMJudge(loaded, batch_size=8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        judge.score(instructions, references, answers)
        seconds = time.perf_counter() - start
    report(
        f"judge ({args.dtype}, {len(answers)} pairs, {len(answers) / seconds:.2f} pairs/s)", prof, seconds, args.rows
    )


def profile_mstep(args) -> None:
    examples = training_examples(25)
    config = dataclasses.replace(training_config(1), optimizer="adamw_torch")  # cpu-small's optimizer
    with tempfile.TemporaryDirectory() as folder, profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train_model(ModelConfig(dtype=args.dtype), examples, config, Path(folder))
    report(
        f"M-step ({args.dtype}, 2 steps x 4 examples, {result.tokens_per_second:.0f} tokens/s)",
        prof,
        result.seconds,
        args.rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--only", nargs="+", choices=["judge", "mstep"], default=["judge", "mstep"])
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    print(machine_summary("auto"))
    torch.manual_seed(0)
    for name in args.only:
        {"judge": profile_judge, "mstep": profile_mstep}[name](args)


if __name__ == "__main__":
    main()
