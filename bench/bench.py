"""restpg benchmarks: prints numbers, asserts nothing. Run: .venv/bin/python bench/bench.py [--quick]

Sections: batched vs one-at-a-time sampling (tokens/s, fp32 and bf16), lexical metric pairs/s.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from restpg.longlamp import load_records, sample_path
from restpg.metrics import LexicalMetrics
from restpg.models import GenerationSettings, ModelConfig, chat_text, generate, load_model
from restpg.prompts import personalized_prompt
from restpg.retrieval import retrieve


def sample_prompts(n: int) -> list[str]:
    records = load_records(sample_path("product_review", "user", "train"), "product_review").records
    return [personalized_prompt(r.task, r.input, [x.item for x in retrieve(r, 5)]) for r in records[:n]]


def tokens_per_second(loaded, prompts, settings) -> tuple[float, int, float]:
    start = time.perf_counter()
    results = generate(loaded, prompts, settings)
    elapsed = time.perf_counter() - start
    tokens = sum(g.new_tokens for samples in results for g in samples)
    return tokens / elapsed, tokens, elapsed


def bench_generation(args) -> None:
    prompts = sample_prompts(args.prompts)
    for dtype in args.dtypes:
        loaded = load_model(ModelConfig(device=args.device, dtype=dtype))
        prompt_tokens = [len(loaded.tokenizer(chat_text(loaded.tokenizer, p))["input_ids"]) for p in prompts]
        print(f"prompts: personalized (k = 5 items), {sum(prompt_tokens) / len(prompt_tokens):.0f} tokens on average; "
              f"sampling at temperature 0.7, up to {args.new_tokens} new tokens")
        # The E-step's shape: many prompts, sampling at gamma = 0.7.
        single = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.7, batch_size=1, seed=0)
        batched = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.7, batch_size=len(prompts), seed=0)
        generate(loaded, prompts[:1], GenerationSettings(max_new_tokens=4))  # warm-up
        one_rate, one_tokens, one_time = tokens_per_second(loaded, prompts[:args.single_prompts], single)
        batch_rate, batch_tokens, batch_time = tokens_per_second(loaded, prompts, batched)
        print(f"generation {dtype:>8} on {loaded.device}: one prompt at a time {one_rate:7.1f} tok/s "
              f"({one_tokens} tokens, {one_time:.1f} s) | batch of {len(prompts)} {batch_rate:7.1f} tok/s "
              f"({batch_tokens} tokens, {batch_time:.1f} s) | speed-up {batch_rate / one_rate:.1f}x")
        del loaded


def bench_metrics(args) -> None:
    records = load_records(sample_path("product_review", "user", "train"), "product_review").records
    references = [r.output for r in records]
    predictions = references[1:] + references[:1]  # realistic, unrelated pairs of review length
    metrics = LexicalMetrics()
    pairs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.metric_seconds:
        metrics.score_pairs(predictions, references)
        pairs += len(references)
    elapsed = time.perf_counter() - start
    start2 = time.perf_counter()
    rouge_pairs = 0
    while time.perf_counter() - start2 < args.metric_seconds:
        for p, r in zip(predictions, references):
            metrics.rouge(p, r)
        rouge_pairs += len(references)
    elapsed2 = time.perf_counter() - start2
    words = sum(len(r.split()) for r in references) / len(references)
    print(f"metrics ({words:.0f}-word texts): ROUGE-1+ROUGE-L+METEOR {pairs / elapsed:7.1f} pairs/s | "
          f"ROUGE only {rouge_pairs / elapsed2:7.1f} pairs/s | {metrics.variant}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=16, help="prompts in the batched run")
    parser.add_argument("--single-prompts", type=int, default=2, help="prompts in the one-at-a-time run")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--metric-seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    bench_metrics(args)
    bench_generation(args)
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
