"""Where one E-step decoding step's time goes, by torch operator, on the real default model.

    .venv/bin/python bench/profile_decode.py [--dtype float32] [--prompts 8] [--samples 4]

The benchmark's sampling work (personalized prompts x m samples, one batch) runs twice under
torch.profiler, with 4 and with 36 new tokens; the difference is 32 decoding steps without the
prefill (torch.profiler runs out of memory recording a whole run: bench/profile_estep.py). Prints
the wall time per step, then each operator's self time and calls per step. Asserts nothing.
"""

from __future__ import annotations

import argparse
import time

from torch.profiler import ProfilerActivity, profile

from bench import machine_summary, sample_prompts
from restpg.inference.models import GenerationSettings, ModelConfig, generate, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rows", type=int, default=22, help="operators to print")
    args = parser.parse_args()
    print(machine_summary("cpu"))
    loaded = load_model(ModelConfig(device="cpu", dtype=args.dtype))
    prompts = sample_prompts(args.prompts, 25)

    def profiled(new_tokens: int) -> tuple[dict[str, tuple[float, int]], float]:
        settings = GenerationSettings(
            max_new_tokens=new_tokens, temperature=0.7, num_samples=args.samples, batch_size=len(prompts), seed=0
        )
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            generate(loaded, prompts, settings)
            seconds = time.perf_counter() - start
        return {e.key: (e.self_cpu_time_total, e.count) for e in prof.key_averages()}, seconds

    profiled(2)  # warm-up
    short, short_seconds = profiled(4)
    long, long_seconds = profiled(36)
    steps = 32
    per_step = sorted(
        (
            (long[key][0] - short.get(key, (0, 0))[0]) / steps / 1e3,
            (long[key][1] - short.get(key, (0, 0))[1]) / steps,
            key,
        )
        for key in long
    )
    rows = len(prompts) * args.samples
    print(
        f"one decoding step of {rows} rows ({args.dtype}): {(long_seconds - short_seconds) / steps * 1e3:.1f} ms wall, "
        f"{sum(ms for ms, _, _ in per_step):.1f} ms in torch operators (the rest: Python and dispatch)"
    )
    for ms, calls, key in sorted(per_step, reverse=True)[: args.rows]:
        print(f"{ms:8.2f} ms {calls:7.0f} calls  {key}")


if __name__ == "__main__":
    main()
