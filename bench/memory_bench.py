"""Peak memory of the judge and of a training step at a large vocabulary. Prints
numbers, asserts nothing.

    .venv/bin/python bench/memory_bench.py [--vocab 256000] [--prompt-tokens 2048]

A tiny config-built Llama with Gemma's vocabulary size (256k) shows on a CPU what a 2B model shows
on a GPU: the vocabulary projection and its log-softmax, not the layers, dominate memory when they
run at every position. Each case runs in a fresh process; the figure is its peak resident memory
above what it held after building the model and the batch (VmHWM, reset before the case).

  judge, every position      the judge before: logits and log-softmax over the whole prompt
  judge, last positions      LLMJudge now: logits_to_keep, only where the rubric levels are read
  training, every position   a training step before: the model's loss over logits at every position
  training, completion only  restpg.training.train now: logits at the completion's positions only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ("judge, every position", "judge, last positions", "training, every position", "training, completion only")


def reset_peak() -> float:
    """Reset the process's peak resident memory (Linux: clear_refs 5) and return the current one, MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_mib()


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(vocab: int, folder: Path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from restpg.inference.models import convert_default_model, load_tokenizer

    tokenizer = load_tokenizer(str(convert_default_model()))
    config = LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run_case(case: str, folder: Path, prompt_tokens: int) -> dict:
    import torch

    from restpg.evaluation.reward import LLMJudge, judge_prompt
    from restpg.inference.models import ModelConfig, load_model
    from restpg.training.train import predicted_positions, weighted_completion_loss

    torch.set_num_threads(2)
    loaded = load_model(ModelConfig(model=str(folder), device="cpu", dtype="float32"))
    if case.startswith("judge"):
        words = " ".join(["word"] * (prompt_tokens // 8))  # three of them: a prompt of about half the tokens
        judge = LLMJudge(loaded, batch_size=4)
        prompts = [judge_prompt(f"instruction {n}: {words}", words, words) for n in range(4)]
        before = reset_peak()
        if case == "judge, last positions":
            list(judge._score_prompts(prompts))
        else:  # the judge's forward pass before the change
            ids = loaded.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                logits = loaded.model(**ids).logits
                torch.log_softmax(logits.float(), dim=-1)
        return {"case": case, "peak_above_start_mib": peak_mib() - before}
    model = loaded.model
    model.train()
    prompt = torch.randint(100, 1000, (2, prompt_tokens))
    completion = torch.randint(100, 1000, (2, 256))
    ids = torch.cat([prompt, completion], dim=1)
    labels = torch.cat([torch.full_like(prompt, -100), completion], dim=1)
    before = reset_peak()
    if case == "training, every position":  # the model's own loss over logits everywhere
        model(input_ids=ids, labels=labels).loss.backward()
    else:
        positions = predicted_positions(labels)
        logits = model(input_ids=ids, logits_to_keep=positions).logits
        weighted_completion_loss(logits, labels[:, positions + 1], torch.ones(2)).backward()
    return {"case": case, "peak_above_start_mib": peak_mib() - before}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=256_000, help="vocabulary size (Gemma: 256,000)")
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.folder), args.prompt_tokens)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build(args.vocab, folder)
        print(
            f"tiny Llama, vocabulary {args.vocab:,}, prompts of {args.prompt_tokens} tokens "
            "for training (batch 2, 256 completion tokens), half that for the judge (4 pairs); peak memory "
            "above the start:"
        )
        for case in CASES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--case",
                    case,
                    "--folder",
                    str(folder),
                    "--prompt-tokens",
                    str(args.prompt_tokens),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                print(f"  {case}: failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {case:28s} {result['peak_above_start_mib']:8.0f} MiB")


if __name__ == "__main__":
    main()
