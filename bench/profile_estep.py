"""Where the E-step's sampling time goes, on the real default model, for the same work as
``bench.py --only sampling`` (8 personalized prompts x m = 4 samples, 128 new tokens, one batch of
32 rows): wall time split by timing hooks into the prefill, the decoder layers' attention and MLP,
the vocabulary head, and everything outside the model's forward (sampling, nucleus sort, stopping
checks, cache bookkeeping); then the arithmetic limit of the work at the machine's measured matmul
speed. Prints numbers, asserts nothing. (torch.profiler ran out of 24 GB recording this run.)

    .venv/bin/python bench/profile_estep.py [--dtype float32] [--prompts 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench import machine_summary, sample_prompts
from restpg.inference.models import GenerationSettings, ModelConfig, chat_text, generate, load_model


def matmul_gflops(loaded, rows: int, seconds: float = 1.5) -> float:
    """The machine's GFLOP/s for a decode step's largest product: ``rows`` x hidden @ hidden x vocabulary."""
    config = loaded.model.config
    dtype = next(loaded.model.parameters()).dtype
    a = torch.randn(rows, config.hidden_size, dtype=dtype)
    b = torch.randn(config.hidden_size, config.vocab_size, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * rows * config.hidden_size * config.vocab_size * count / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    print(machine_summary("auto"))
    loaded = load_model(ModelConfig(dtype=args.dtype))
    prompts = sample_prompts(args.prompts, 25)
    lengths = [len(loaded.tokenizer(chat_text(loaded.tokenizer, p))["input_ids"]) for p in prompts]
    settings = GenerationSettings(
        max_new_tokens=args.new_tokens,
        temperature=0.7,
        num_samples=args.samples,
        batch_size=args.prompts,
        seed=0,
    )
    generate(loaded, prompts[:1], GenerationSettings(max_new_tokens=4))  # warm-up
    spent: dict[str, float] = {}
    model = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    layers = model.model.layers
    timed = {"attention": [layer.self_attn for layer in layers], "mlp": [layer.mlp for layer in layers]}
    timed["head"] = [model.lm_head]
    timed["forward"] = [model]

    def hooks(name):
        def before(module, args, kwargs):
            hidden = args[0] if args else next(iter(kwargs.values()), None)
            hidden = (
                hidden if isinstance(hidden, torch.Tensor) else kwargs.get("input_ids", kwargs.get("hidden_states"))
            )
            phase = "prefill" if hidden is not None and hidden.dim() >= 2 and hidden.shape[1] > 1 else "decode"
            module._restpg_start = (phase, time.perf_counter())

        def after(module, args, output):
            phase, start = module._restpg_start
            spent[(phase, name)] = spent.get((phase, name), 0.0) + time.perf_counter() - start

        return before, after

    handles = []
    for name, modules in timed.items():
        before, after = hooks(name)
        for module in modules:
            handles += [
                module.register_forward_pre_hook(before, with_kwargs=True),
                module.register_forward_hook(after),
            ]
    start = time.perf_counter()
    results = generate(loaded, prompts, settings)
    elapsed = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    tokens = sum(g.new_tokens for samples in results for g in samples)
    rows = args.prompts * args.samples
    print(
        f"{args.prompts} prompts ({sum(lengths) / len(lengths):.0f} tokens on average) x m = {args.samples}, "
        f"up to {args.new_tokens} new tokens, {args.dtype}: {tokens} tokens in {elapsed:.1f} s "
        f"({tokens / elapsed:.1f} tok/s, with timing hooks)"
    )
    inside = sum(v for (phase, name), v in spent.items() if name == "forward")
    parts = []
    for phase in ("prefill", "decode"):
        parts.append((f"{phase}: model forward", spent.get((phase, "forward"), 0.0)))
        for name in ("attention", "mlp", "head"):
            parts.append((f"  {phase}: {name} (all layers)", spent.get((phase, name), 0.0)))
    parts.append(("outside the forward (sampling, nucleus, stopping, cache)", elapsed - inside))
    for name, seconds in parts:
        print(f"  {name:<58} {seconds:6.1f} s  {seconds / elapsed:5.1%}")
    gflops = matmul_gflops(loaded, rows)
    config = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    head = config.hidden_size * config.vocab_size
    flops = 2 * (params + (head if config.tie_word_embeddings else 0)) * (sum(lengths) + tokens)
    print(
        f"matmul at the head's shape ({rows} x hidden @ hidden x vocab): {gflops:.0f} GFLOP/s; "
        f"weights' arithmetic for this work: {flops / 1e9:.0f} GFLOP -> limit {flops / 1e9 / gflops:.1f} s "
        f"({tokens / (flops / 1e9 / gflops):.0f} tok/s); this run: {flops / 1e9 / gflops / elapsed:.0%} of it"
    )


if __name__ == "__main__":
    main()
