"""restpg benchmarks: prints numbers, asserts nothing. Run: .venv/bin/python bench/bench.py [--device cuda]

Sections: lexical reward pairs/s (ROUGE, METEOR); E-step sampling tokens/s, batched (m samples per
prompt, many prompts) against one prompt at a time, fp32 and bf16; the same from a LoRA adapter,
attached against merged into the weights; linear weights packed for oneDNN against F.linear;
LLM-judge pairs/s; M-step
training tokens/s; peak memory. The wall time of a whole cpu-small round is in each run's
timings.json (see README).
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest.mock import patch

import torch

from restpg.data.longlamp import load_records, sample_path
from restpg.data.prompts import PromptSettings, personalized_prompt, reasoning_target
from restpg.data.retrieval import retrieve
from restpg.evaluation.metrics import LexicalMetrics
from restpg.evaluation.reward import LLMJudge, judge_prompt
from restpg.inference.models import (
    DEFAULT_MODEL,
    GenerationSettings,
    ModelConfig,
    chat_text,
    generate,
    load_adapter,
    load_merged,
    load_model,
)
from restpg.inference.packed_linear import pack_weight, packed_product, packing_available
from restpg.inference.shared_attention import NAME as SHARED_PROMPT_ATTENTION
from restpg.training.train import TrainConfig, TrainingExample, train_model


def machine_summary(device: str) -> str:
    """The CPU, its bf16 flags, threads, and what dtype "auto" picks here and why."""
    from restpg.inference.hardware import NATIVE_BF16_FLAGS, choose_precision, cpu_flags, pick_device

    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", *NATIVE_BF16_FLAGS) if f in flags]
    precision = choose_precision("auto", pick_device(device))
    return (
        f"{platform.processor() or platform.machine()}, CPU flags: {' '.join(shown) or 'none of avx2/avx512'}; "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}\n"
        f"dtype auto -> {precision.name}: {precision.reason}"
    )


def sample_records(n: int):
    return load_records(sample_path("product_review", "user", "train"), "product_review").records[:n]


def sample_prompts(n: int, max_item_words: int | None) -> list[str]:
    settings = PromptSettings(max_item_words=max_item_words)
    return [personalized_prompt(r.task, r.input, [x.item for x in retrieve(r, 5)], settings) for r in sample_records(n)]


def tokens_per_second(loaded, prompts, settings) -> tuple[float, int, float]:
    start = time.perf_counter()
    results = generate(loaded, prompts, settings)
    elapsed = time.perf_counter() - start
    tokens = sum(g.new_tokens for samples in results for g in samples)
    return tokens / elapsed, tokens, elapsed


def _weight_shapes(loaded) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(in, out) of every decoder matmul with a weight, and the vocabulary head's."""
    model = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    head = model.get_output_embeddings()
    layers = [
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
    ]
    return layers, (head.in_features, head.out_features)


def _matmul_seconds(
    shapes: list[tuple[int, int]], rows: int, dtype: torch.dtype, repeats: int = 3, packed: bool | None = None
) -> float:
    """The fastest of ``repeats`` timings of one pass of ``rows`` rows through every weight shape:
    with torch's ``F.linear`` (``packed`` False), with oneDNN-packed weights (True, as
    restpg.inference.packed_linear runs them), or the faster of the two (None: the machine's limit)."""
    if packed is None:
        plain = _matmul_seconds(shapes, rows, dtype, repeats, packed=False)
        return min(plain, _matmul_seconds(shapes, rows, dtype, repeats, packed=True)) if packing_available() else plain
    weights = [torch.randn(o, i).to(dtype) for i, o in shapes]
    if packed:
        weights = [pack_weight(w) for w in weights]
    inputs = {i: torch.randn(rows, i).to(dtype) for i, _ in shapes}
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass warms up
            start = time.perf_counter()
            for (i, _), w in zip(shapes, weights):
                if packed:
                    packed_product(inputs[i], w)
                else:
                    torch.nn.functional.linear(inputs[i], w)
            best = min(best, time.perf_counter() - start)
    return best


def memory_gbps(megabytes: int = 512) -> float:
    """GB/s of a large tensor copy on this machine (read + write)."""
    a = torch.ones(megabytes * 2**20 // 4)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * 4 / best / 1e9


def arithmetic_limit(loaded, prompt_lengths: list[int], new_tokens: int, rows: int) -> tuple[float, float]:
    """(seconds, GFLOP/s): the time the work's weight matmuls take at the speed this machine measures
    for the model's own shapes (the faster of torch's F.linear and oneDNN-packed weights): every
    prompt's prefill (decoder weights, the head at its last position only) and the new tokens, ``rows`` at a time (decoder weights and the head). Attention
    over the cache, sampling and everything else come on top: a path cannot beat this."""
    layers, head = _weight_shapes(loaded)
    dtype = loaded.dtype
    mean_prompt = round(sum(prompt_lengths) / len(prompt_lengths))
    prefill = len(prompt_lengths) * (_matmul_seconds(layers, mean_prompt, dtype) + _matmul_seconds([head], 1, dtype))
    decode = new_tokens / rows * _matmul_seconds(layers + [head], rows, dtype)
    flops = 2 * sum(i * o for i, o in layers) * (sum(prompt_lengths) + new_tokens) + 2 * head[0] * head[1] * (
        len(prompt_lengths) + new_tokens
    )
    return prefill + decode, flops / (prefill + decode) / 1e9


def cache_read_seconds(loaded, steps: int, rows: int, prompts: int, prompt_length: int) -> tuple[float, float]:
    """(seconds, GB/s): reading the keys and values once per decoding step, every layer, at this
    machine's measured copy bandwidth (attention in decoding is memory-bound: this is its floor):
    each prompt's once (restpg.inference.shared_attention), each row's new tokens (on average half the steps)."""
    config = loaded.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_position = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * loaded.dtype.itemsize
    gbps = memory_gbps()
    return steps * per_position * (prompts * prompt_length + rows * steps / 2) / gbps / 1e9, gbps


def bench_generation(args) -> None:
    prompts = sample_prompts(args.prompts, args.max_item_words)
    for dtype in args.dtypes:
        loaded = load_model(ModelConfig(model=args.model, device=args.device, dtype=dtype))
        prompt_tokens = [len(loaded.tokenizer(chat_text(loaded.tokenizer, p))["input_ids"]) for p in prompts]
        print(
            f"E-step prompts: personalized, k = 5 items cut to {args.max_item_words} words, "
            f"{sum(prompt_tokens) / len(prompt_tokens):.0f} tokens on average; temperature 0.7, "
            f"up to {args.new_tokens} new tokens"
        )
        single = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.7, batch_size=1, seed=0)
        generate(loaded, prompts[:1], GenerationSettings(max_new_tokens=4))  # warm-up
        one_rate, one_tokens, one_time = tokens_per_second(loaded, prompts[: args.single_prompts], single)
        print(
            f"  sampling {dtype:>8} on {loaded.device}: one prompt at a time {one_rate:7.1f} tok/s "
            f"({one_tokens} tokens, {one_time:.1f} s)"
        )
        for batch_rows in args.batch_rows:
            batched = GenerationSettings(
                max_new_tokens=args.new_tokens,
                temperature=0.7,
                num_samples=args.samples,
                batch_size=max(1, batch_rows // args.samples),
                seed=0,
            )
            bench_batched(args, loaded, prompts, prompt_tokens, batched, one_rate)
        del loaded


def bench_batched(args, loaded, prompts, prompt_tokens, batched, one_rate) -> None:
    """The prompts, m samples each, ``batched.batch_size`` prompts at a time, against one at a time;
    on a CPU also the copied cache side by side and the share of the arithmetic limit."""
    dtype = str(loaded.dtype).removeprefix("torch.")
    batch_rate, batch_tokens, batch_time = tokens_per_second(loaded, prompts, batched)
    implementation = loaded.model.config._attn_implementation
    if implementation == SHARED_PROMPT_ATTENTION:  # the same work with the prompt's cache copied to each sample
        loaded.model.set_attn_implementation("sdpa")
        copied_rate, copied_tokens, _ = tokens_per_second(loaded, prompts, batched)
        loaded.model.set_attn_implementation(implementation)
        print(
            f"  sampling {dtype:>8}: prompt's cache copied to each sample {copied_rate:7.1f} tok/s ({copied_tokens} "
            f"tokens) | read once for them (restpg.inference.shared_attention) {batch_rate:7.1f} tok/s ({batch_tokens} tokens)"
            f" | {batch_rate / copied_rate:.2f}x"
        )
    rows = batched.batch_size * args.samples
    print(
        f"  sampling {dtype:>8} on {loaded.device}: {len(prompts)} prompts x m = {args.samples} in batches of "
        f"{rows} rows ({implementation}) {batch_rate:7.1f} tok/s ({batch_tokens} tokens, {batch_time:.1f} s) | "
        f"speed-up over one prompt at a time {batch_rate / one_rate:.1f}x"
    )
    if loaded.device.type == "cpu":
        limit, gflops = arithmetic_limit(loaded, prompt_tokens, batch_tokens, rows)
        # the decoding loop runs until its longest row stops: at most new_tokens steps per batch
        batches = -(-len(prompts) // batched.batch_size)
        reads, gbps = cache_read_seconds(loaded, args.new_tokens, rows, batched.batch_size, max(prompt_tokens))
        reads *= batches
        print(
            f"  limit of the batched work: weights' arithmetic {limit:.1f} s at {gflops:.0f} GFLOP/s (the model's "
            f"weight shapes, measured here) = {batch_tokens / limit:.1f} tok/s, the path at {limit / batch_time:.0%} "
            f"of it; with the KV cache read once per step ({reads:.1f} s at {gbps:.0f} GB/s) "
            f"{batch_tokens / (limit + reads):.1f} tok/s, the path at {(limit + reads) / batch_time:.0%}"
        )


def bench_adapter(args) -> None:
    """The E-step's sampling from a LoRA adapter: attached (its layers run at every step) against
    merged into the base's weights (restpg.inference.models.load_merged, what a run's steps use)."""
    prompts = sample_prompts(args.prompts, args.max_item_words)
    settings = GenerationSettings(
        max_new_tokens=args.new_tokens,
        temperature=0.7,
        num_samples=args.samples,
        batch_size=max(1, args.batch_rows[0] // args.samples),
        seed=0,
    )
    for dtype in args.dtypes:
        config = ModelConfig(model=args.model, device=args.device, dtype=dtype)
        attached = load_model(config)
        load_adapter(attached, args.adapter)
        generate(attached, prompts[:1], GenerationSettings(max_new_tokens=4))  # warm-up
        attached_rate, tokens, _ = tokens_per_second(attached, prompts, settings)
        attached_texts = [g.text for samples in generate(attached, prompts[:2], settings) for g in samples]
        del attached
        merged = load_merged(config, args.adapter)
        merged_rate, merged_tokens, _ = tokens_per_second(merged, prompts, settings)
        merged_texts = [g.text for samples in generate(merged, prompts[:2], settings) for g in samples]
        same = sum(a == b for a, b in zip(attached_texts, merged_texts))
        print(
            f"sampling from an adapter ({dtype}, {len(prompts)} prompts x m = {args.samples}, {settings.batch_size * args.samples}"
            f" rows a batch): attached {attached_rate:7.1f} tok/s ({tokens} tokens) | merged {merged_rate:7.1f} tok/s "
            f"({merged_tokens} tokens) | {merged_rate / attached_rate:.2f}x; the same samples for {same} of "
            f"{len(merged_texts)} (two prompts' samples compared; same seed)"
        )
        del merged


def bench_packing(args) -> None:
    """Linear weights packed for oneDNN (restpg.inference.packed_linear, what load_model does on a CPU) against
    torch's F.linear, side by side in one process, each timing twice in turns: the weights' products
    alone; E-step sampling (m samples per prompt); one prompt at a time (the page's shape); the judge."""
    if (
        not packing_available()
        or args.device not in ("auto", "cpu")
        or torch.cuda.is_available()
        and args.device == "auto"
    ):
        print("packing: CPU only, with a torch that has oneDNN (restpg.inference.packed_linear); skipped here")
        return
    prompts = sample_prompts(args.prompts, args.max_item_words)
    workloads = judge_workloads(args.judge_pairs, args.samples)
    for dtype in args.dtypes:
        models = {
            packed: load_model(ModelConfig(model=args.model, device=args.device, dtype=dtype, pack_weights=packed))
            for packed in (False, True)
        }
        print(f"packing ({dtype}): {models[True].packing.reason}")
        layers, head = _weight_shapes(models[False])
        flops = 2 * (sum(i * o for i, o in layers) + head[0] * head[1])
        for rows in (1, 32, 512):
            plain, packed = (
                _matmul_seconds(layers + [head], rows, models[False].dtype, packed=p) for p in (False, True)
            )
            print(
                f"  weights' products, {rows:3} rows: F.linear {flops * rows / plain / 1e9:5.0f} GFLOP/s | packed "
                f"{flops * rows / packed / 1e9:5.0f} GFLOP/s | {plain / packed:.2f}x"
            )
        shapes = {
            f"E-step sampling, {len(prompts)} prompts x m = {args.samples}": GenerationSettings(
                max_new_tokens=args.new_tokens,
                temperature=0.7,
                num_samples=args.samples,
                batch_size=max(1, args.batch_rows[0] // args.samples),
                seed=0,
            ),
            f"one prompt at a time, {args.single_prompts} prompts": GenerationSettings(
                max_new_tokens=args.new_tokens, temperature=0.7, batch_size=1, seed=0
            ),
        }
        for shape, settings in shapes.items():
            work = prompts if settings.num_samples > 1 else prompts[: args.single_prompts]
            rates: dict[bool, list[float]] = {False: [], True: []}
            texts: dict[bool, list[str]] = {}
            for packed in (False, True):
                generate(models[packed], prompts[:1], GenerationSettings(max_new_tokens=4))  # warm-up
            for _ in range(2):
                for packed in (False, True):
                    start = time.perf_counter()
                    results = generate(models[packed], work, settings)
                    rates[packed].append(sum(g.new_tokens for r in results for g in r) / (time.perf_counter() - start))
                    texts[packed] = [g.text for r in results for g in r]
            same = sum(a == b for a, b in zip(texts[False], texts[True]))
            print(
                f"  {shape}: F.linear {'/'.join(f'{r:.1f}' for r in rates[False])} tok/s | packed "
                f"{'/'.join(f'{r:.1f}' for r in rates[True])} tok/s | {sum(rates[True]) / sum(rates[False]):.2f}x; "
                f"the same text for {same} of {len(texts[True])} samples (same seed)"
            )
        for shape, (instructions, references, answers) in workloads.items():
            judged: dict[bool, list[float]] = {False: [], True: []}
            scores = {}
            for packed in (False, True):
                LLMJudge(models[packed], batch_size=1).score(["warm"], ["up"], ["pass"])
            for _ in range(2):
                for packed in (False, True):
                    judge = LLMJudge(models[packed], batch_size=args.judge_batch)
                    start = time.perf_counter()
                    scores[packed] = judge.score(instructions, references, answers)
                    judged[packed].append(len(answers) / (time.perf_counter() - start))
            differ = max(
                abs(a.probabilities[level] - b.probabilities[level])
                for a, b in zip(scores[False], scores[True])
                for level in a.probabilities
            )
            levels = sum(a.level == b.level for a, b in zip(scores[False], scores[True]))
            print(
                f"  judge, {shape}: F.linear {'/'.join(f'{r:.2f}' for r in judged[False])} pairs/s | packed "
                f"{'/'.join(f'{r:.2f}' for r in judged[True])} pairs/s | {sum(judged[True]) / sum(judged[False]):.2f}x;"
                f" the same level for {levels} of {len(answers)}, level probabilities within {differ:.2g}"
            )
        del models


def judge_workloads(n: int, m: int) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """n distinct judge pairs of two shapes: the evaluation's (one answer per request: n distinct
    requests, up to the sample's 72) and the E-step's (m answers per request: one instruction and
    ground truth under m answers). Requests are the sample's product-review requests (all its
    splits); answers are other users' reviews (about 80 words)."""
    records, seen = [], set()
    for family in ("user", "temporal"):
        for split in ("train", "val", "test"):
            for record in load_records(sample_path("product_review", family, split), "product_review").records:
                if record.input not in seen:
                    seen.add(record.input)
                    records.append(record)

    def pairs(per_request: int) -> tuple[list[str], list[str], list[str]]:
        rows = [
            (r.input, r.output, records[(i + j + 1 + i // len(records)) % len(records)].output)
            for i in range(max(1, n // per_request))
            for r in [records[i % len(records)]]
            for j in range(per_request)
        ]
        return tuple(list(column) for column in zip(*rows))

    return {"one answer per request (evaluation)": pairs(1), f"m = {m} answers per request (E-step)": pairs(m)}


def bench_judge(args) -> None:
    workloads = judge_workloads(args.judge_pairs, args.samples)
    for dtype in args.dtypes:
        loaded = load_model(ModelConfig(model=args.model, device=args.device, dtype=dtype))
        LLMJudge(loaded, batch_size=1).score(["warm"], ["up"], ["pass"])
        tokenizer = loaded.tokenizer
        for shape, (instructions, references, answers) in workloads.items():
            tokens = [
                len(tokenizer(chat_text(tokenizer, judge_prompt(*pair)), add_special_tokens=False)["input_ids"])
                for pair in zip(instructions, references, answers)
            ]
            rates = {}
            for share in (False, True):
                judge = LLMJudge(loaded, batch_size=args.judge_batch, share_prefixes=share)
                start = time.perf_counter()
                judge.score(instructions, references, answers)
                rates[share] = len(answers) / (time.perf_counter() - start)
            print(
                f"LLM judge ({dtype}, {shape}, {len(answers)} pairs of {sum(tokens) / len(tokens):.0f} prompt tokens, "
                f"batches of {args.judge_batch}): every prompt whole {rates[False]:.2f} pairs/s | shared prefixes "
                f"{rates[True]:.2f} pairs/s | {rates[True] / rates[False]:.1f}x"
            )
        del loaded


def training_examples(max_item_words: int) -> list[TrainingExample]:
    """8 M-step-like examples: personalized prompts (k = 5 items) and reasoning + review completions."""
    settings = PromptSettings(max_item_words=max_item_words)
    return [
        TrainingExample(
            personalized_prompt(r.task, r.input, [x.item for x in retrieve(r, 5)], settings),
            reasoning_target("- writes short sentences\n- mentions her kids", r.output),
        )
        for r in sample_records(8)
    ]


def training_config(micro: int, dropout: float = 0.05) -> TrainConfig:
    """Two optimizer steps of 4 examples, ``micro`` at a time, LoRA r = 8 (cpu-small's)."""
    return TrainConfig(
        select_by="last",
        learning_rate=1e-4,
        warmup_steps=0,
        max_steps=2,
        batch_size=4,
        per_device_batch_size=micro,
        save_steps=100,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=dropout,
    )


def bench_training(args) -> None:
    examples = training_examples(args.max_item_words)
    # at dropout 0 there are no masks: one run, not one per --dropout-masks entry
    runs = [
        (m, d, masks)
        for m in args.micro_batches
        for d in args.lora_dropouts
        for masks in (args.dropout_masks if d > 0 else args.dropout_masks[:1])
    ]
    for dtype in args.dtypes:
        for micro, dropout, masks in runs:
            # "torch": peft's nn.Dropout as it comes (one generator call per element on a CPU);
            # "bulk": restpg's, drawn 16 bits an element (restpg.training.lora_dropout), what restpg trains with
            mask_source = (
                nullcontext()
                if masks == "bulk"
                else patch("restpg.training.train.use_bulk_lora_dropout", lambda model: 0)
            )
            with tempfile.TemporaryDirectory() as folder, mask_source:
                result = train_model(
                    ModelConfig(model=args.model, device=args.device, dtype=dtype),
                    examples,
                    training_config(micro, dropout),
                    Path(folder),
                )
            shown = f"dropout {dropout:g}" + (f" ({masks} masks)" if dropout > 0 else "")
            print(
                f"M-step training ({dtype}, LoRA r = 8, {shown}, batch 4 = {4 // micro} x {micro}): "
                f"{result.tokens_per_second:.0f} tokens/s ({result.train_tokens} tokens, {result.seconds:.1f} s)"
            )


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
    print(
        f"metrics ({words:.0f}-word texts): ROUGE-1+ROUGE-L+METEOR {pairs / elapsed:7.1f} pairs/s | "
        f"ROUGE only {rouge_pairs / elapsed2:7.1f} pairs/s | {metrics.variant}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="the default model, a hub id or a folder (bench/random_model.py)"
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=24, help="prompts in the batched run (cpu-small: 24 inputs)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt m (cpu-small: 4)")
    parser.add_argument(
        "--batch-rows", type=int, nargs="+", default=[32], help="sequences per generate() batch (each, in turn)"
    )
    parser.add_argument("--max-item-words", type=int, default=25, help="cpu-small: 25")
    parser.add_argument(
        "--adapter",
        default="assets/models/restpg-sample/sft/adapter",
        help="LoRA adapter for --only adapter (default: the shipped SFT adapter)",
    )
    parser.add_argument("--judge-pairs", type=int, default=32)
    parser.add_argument("--judge-batch", type=int, default=8, help="pairs per judge forward pass (restpg: 8)")
    parser.add_argument(
        "--micro-batches",
        type=int,
        nargs="+",
        default=[1, 4],
        help="per-device micro-batch sizes to train with (batch 4 in all)",
    )
    parser.add_argument(
        "--lora-dropouts", type=float, nargs="+", default=[0.05], help="LoRA dropouts to train with (restpg: 0.05)"
    )
    parser.add_argument(
        "--dropout-masks",
        nargs="+",
        choices=["bulk", "torch"],
        default=["bulk"],
        help="how LoRA dropout's CPU masks are drawn: restpg's bulk draw (what it trains with), torch's nn.Dropout",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["metrics", "sampling", "adapter", "packing", "judge", "training"],
        help="run only these sections (default: all)",
    )
    parser.add_argument("--single-prompts", type=int, default=2, help="prompts in the one-at-a-time run")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--metric-seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(machine_summary(args.device))
    sections = {
        "metrics": bench_metrics,
        "sampling": bench_generation,
        "adapter": bench_adapter,
        "packing": bench_packing,
        "judge": bench_judge,
        "training": bench_training,
    }
    for name in args.only or list(sections):
        sections[name](args)
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
