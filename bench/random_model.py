"""A model folder with the architecture and tokenizer of another one and random weights.

    python bench/random_model.py --like FOLDER --out FOLDER [--seed 0]

``--like`` needs only ``config.json`` and the tokenizer's files, not the weights: a few MB instead of
the model. Its use is speed and code-path checks where the weights cannot come: a machine with no
hub access and no room to carry them (bench/gpu_check.sh on a lent GPU). A forward pass costs the
same whatever the weights hold, so throughput measured on it is the real model's; what it generates
is noise (it rarely writes end-of-sequence, so sampling runs to its token limit: the worst case).
Nothing about quality can be read from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def random_model(like: Path, out: Path, seed: int = 0) -> Path:
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} holds a model already")
    config = AutoConfig.from_pretrained(like)
    tokenizer = AutoTokenizer.from_pretrained(like)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--like", type=Path, required=True, help="folder with config.json and the tokenizer")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not hold a model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = random_model(args.like, args.out, args.seed)
    count = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(out).parameters())
    print(f"{out}: {count / 1e6:.1f}M parameters, random weights, the architecture and tokenizer of {args.like}")


if __name__ == "__main__":
    main()
