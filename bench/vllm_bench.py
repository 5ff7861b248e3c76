"""The E-step's sampling through vLLM against restpg's Hugging Face path, on one CUDA GPU.

    python bench/vllm_bench.py --adapter assets/models/restpg-sample/sft/adapter \
        [--model default] [--prompts 16] [--samples 32] [--new-tokens 128] [--batch-rows 256 512]

Same prompts (the sample's product reviews with 5 retrieved profile items, the E-step's prompt),
same settings (temperature 0.7, top-p 0.95, m samples a prompt, the same token limit), the same
LoRA adapter: merged into the base's weights on the Hugging Face path (what a run's steps do,
restpg.inference.models.load_merged), a LoRA request on the base in vLLM (restpg.inference.vllm_sampling). Prints the
tokens/s of each, the engine's start-up, and greedy decoding compared token by token.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch

from bench import sample_prompts
from restpg.inference.models import (
    DEFAULT_MODEL,
    GenerationSettings,
    ModelConfig,
    free_memory,
    generate,
    load_merged,
    prompt_token_counter,
    resolve_model,
)
from restpg.inference.vllm_sampling import VLLMConfig, VLLMGenerator, adapter_rank


def rate(sample, prompts, settings) -> tuple[float, int, float, list]:
    start = time.perf_counter()
    results = sample(prompts, settings)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = sum(g.new_tokens for samples in results for g in samples)
    return tokens / elapsed, tokens, elapsed, results


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapter", type=Path, required=True, help="a LoRA adapter folder (a round's)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=32, help="m (paper: 32)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--greedy-prompts", type=int, default=16)
    parser.add_argument("--greedy-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()

    import vllm

    print(
        f"GPU {torch.cuda.get_device_name(0)} | torch {torch.__version__} (CUDA {torch.version.cuda}) | "
        f"vllm {vllm.__version__} | {args.dtype}"
    )
    prompts = sample_prompts(args.prompts, None)
    greedy_prompts = sample_prompts(args.greedy_prompts, None)

    def settings(rows: int) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=args.new_tokens,
            temperature=0.7,
            top_p=0.95,
            num_samples=args.samples,
            batch_size=max(1, rows // args.samples),
            seed=0,
        )

    greedy = GenerationSettings(max_new_tokens=args.greedy_tokens, temperature=0.0, batch_size=len(greedy_prompts))
    hf_rates, vllm_rates = {}, {}

    # restpg's path: the adapter merged into the base, transformers' model, restpg.inference.models.generate.
    merged = load_merged(ModelConfig(model=args.model, device="cuda", dtype=args.dtype), args.adapter)
    count = prompt_token_counter(merged.tokenizer)
    prompt_tokens = [count(p) for p in [*prompts, *greedy_prompts]]
    print(
        f"{len(prompts)} prompts, {sum(prompt_tokens[: len(prompts)]) / len(prompts):.0f} tokens on average; m = {args.samples}"
    )
    generate(merged, prompts, settings(max(args.batch_rows)))  # warm-up at full size (allocator, kernels)
    for rows in args.batch_rows:
        hf_rates[rows], tokens, seconds, _ = rate(partial(generate, merged), prompts, settings(rows))
        print(f"hf   {rows:4d} rows a batch: {hf_rates[rows]:9.1f} tok/s ({tokens} tokens in {seconds:.1f} s)")
    hf_greedy = generate(merged, greedy_prompts, greedy)
    hf_ids = [merged.tokenizer(s[0].text, add_special_tokens=False)["input_ids"] for s in hf_greedy]
    print(f"hf   peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    del merged
    free_memory()

    # vLLM: the base model with the adapter as a LoRA request (restpg.inference.vllm_sampling).
    start = time.perf_counter()
    engine = VLLMGenerator(
        VLLMConfig(
            model=resolve_model(args.model),
            dtype=args.dtype,
            max_model_len=max(prompt_tokens) + 16 + max(args.new_tokens, args.greedy_tokens),
            lora_rank=adapter_rank(args.adapter),
        )
    )
    engine.use_adapter(args.adapter)
    engine.generate(prompts[:1], GenerationSettings(max_new_tokens=4))  # the adapter's first load
    print(
        f"vllm engine start-up (load, compile, CUDA graphs) and the adapter's first use: {time.perf_counter() - start:.1f} s"
    )
    engine.generate(prompts, settings(max(args.batch_rows)))  # warm-up at full size (the LoRA kernels' JIT)
    everything = args.samples * len(prompts)  # every prompt in one call: vLLM schedules the rows itself
    for rows in dict.fromkeys([*args.batch_rows, everything]):  # once each
        vllm_rates[rows], tokens, seconds, results = rate(engine.generate, prompts, settings(rows))
        print(f"vllm {rows:4d} rows a call : {vllm_rates[rows]:9.1f} tok/s ({tokens} tokens in {seconds:.1f} s)")
    truncated = sum(g.truncated for samples in results for g in samples)
    print(f"vllm samples cut at the limit: {truncated} of {sum(len(s) for s in results)}")
    for rows in args.batch_rows:
        print(f"ratio at {rows} rows: vllm / hf = {vllm_rates[rows] / hf_rates[rows]:.2f}x")
    best = max(vllm_rates.values()) / max(hf_rates.values())
    print(f"best vllm / best hf = {best:.2f}x")
    vllm_greedy = engine.generate(greedy_prompts, greedy)
    vllm_ids = [engine.tokenizer(s[0].text, add_special_tokens=False)["input_ids"] for s in vllm_greedy]
    same = sum(a == b for a, b in zip(hf_ids, vllm_ids))
    prefixes = [common_prefix(a, b) for a, b in zip(hf_ids, vllm_ids)]
    print(
        f"greedy ({args.greedy_tokens} tokens, {len(greedy_prompts)} prompts, {args.dtype}): the same tokens for "
        f"{same} of {len(greedy_prompts)}; tokens in common before the first difference: mean "
        f"{sum(prefixes) / len(prefixes):.1f}, min {min(prefixes)}"
    )
    engine.use_adapter(None)
    base_rate, tokens, seconds, _ = rate(engine.generate, prompts, settings(everything))
    print(
        f"vllm base model without the adapter: {base_rate:9.1f} tok/s "
        f"(with the adapter: {vllm_rates[everything] / base_rate:.2f}x of that)"
    )
    engine.close()
    free_memory()
    print(f"after close: {torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated in this process")


if __name__ == "__main__":
    main()
