"""``python -m restpg``: the pipeline headless.

  generate   reasoning + response for a user's requests, with retrieved items, real text, metrics
  validate   check a dataset file against LongLaMP's schema and list every bad record
  users      list the users of a dataset
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .longlamp import (PUBLIC_TASKS, SPLIT_FAMILIES, SPLITS, TASKS, DatasetError, LoadedRecords,
                       load_records, sample_path)
from .models import (DEFAULT_MODEL, PAPER_INFERENCE_TEMPERATURE, GenerationSettings, ModelConfig,
                     ModelError, PromptTooLongError, default_max_new_tokens, load_adapter, load_model)
from .prompts import PromptSettings
from .retrieval import PAPER_TOP_K, item_text


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=list(TASKS), help="LongLaMP task")
    parser.add_argument("--data", help="dataset: .json/.jsonl/.parquet file, datasets.save_to_disk folder, "
                                       "or the hub id LongLaMP/LongLaMP (default: the shipped sample)")
    parser.add_argument("--family", default="user", choices=SPLIT_FAMILIES, help="split family")
    parser.add_argument("--split", choices=SPLITS, help="split (default: every split of the sample)")


def load_cli_records(args: argparse.Namespace) -> list[LoadedRecords]:
    if args.data:
        return [load_records(args.data, args.task, args.family, args.split)]
    if args.task not in PUBLIC_TASKS:
        raise DatasetError(f"no sample data ships for {args.task!r} (its data is private): pass --data")
    splits = [args.split] if args.split else list(SPLITS)
    return [load_records(sample_path(args.task, args.family, s), args.task, args.family, s) for s in splits]


def _print_block(title: str, text: str) -> None:
    print(f"\n== {title} ==")
    print(textwrap.fill(text, width=100, replace_whitespace=False) if "\n" not in text else text)


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .metrics import LexicalMetrics
    from .personalize import personalize

    records = [r for loaded in load_cli_records(args) for r in loaded.records if r.user_id == args.user]
    if not records:
        raise DatasetError(f"user {args.user!r} has no records in task {args.task} "
                           f"({args.family} split family{', split ' + args.split if args.split else ''})")
    if args.request is not None:
        if not 0 <= args.request < len(records):
            raise DatasetError(f"user {args.user!r} has {len(records)} request(s); --request {args.request} is out of range")
        records = [records[args.request]]
    loaded = load_model(ModelConfig(model=args.model, device=args.device, dtype=args.dtype))
    if args.adapter:
        load_adapter(loaded, args.adapter)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens or default_max_new_tokens(loaded.device),
        temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    metrics = LexicalMetrics()
    with tqdm(total=len(records), desc="generating", unit="request", file=sys.stderr) as bar:
        outputs = personalize(loaded, records, metrics, k=args.k, generation=settings,
                              prompt_settings=PromptSettings(max_item_words=args.max_item_words),
                              on_batch=bar.update)
    print(f"model: {loaded.name}{' + adapter ' + args.adapter if args.adapter else ''} "
          f"on {loaded.device} ({str(loaded.dtype).replace('torch.', '')})")
    print(f"metrics: {metrics.variant}")
    for out in outputs:
        print("\n" + "=" * 100)
        print(f"record {out.record.record_id}")
        _print_block("request", out.record.input)
        print(f"\n== retrieved profile items ({len(out.retrieved)} of {len(out.record.profile)}, BM25) ==")
        for rank, item in enumerate(out.retrieved, start=1):
            preview = item_text(out.record.task, item.item)
            print(f"{rank}. [{item.item_id}] score {item.score:.2f}: {preview[:160]}{'...' if len(preview) > 160 else ''}")
        _print_block("reasoning", out.parsed.reasoning or "(none)")
        _print_block("response", out.parsed.response or "(none)")
        _print_block("real text", out.record.output)
        if out.parsed.problems:
            print("\nparse: " + "; ".join(out.parsed.problems))
        print(f"\n{out.generation.new_tokens} new tokens{' (cut at the limit)' if out.generation.truncated else ''}; "
              + ", ".join(f"{name} {value:.4f}" for name, value in out.scores.items()))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_records(args.path, args.task, args.family, args.split, strict=False)
    print(f"{args.path}: {len(loaded.records)} good record(s), {len(loaded.problems)} bad, "
          f"{len(loaded.users())} user(s)")
    for problem in loaded.problems:
        print(f"  {problem}")
    return 1 if loaded.problems else 0


def cmd_users(args: argparse.Namespace) -> int:
    for loaded in load_cli_records(args):
        for user in loaded.users():
            print(f"{user}\t{len(loaded.for_user(user))} request(s)\t{loaded.source}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m restpg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="personalized reasoning + response for one user")
    _dataset_args(gen)
    gen.add_argument("--user", required=True, help="user id (the task's user-id field)")
    gen.add_argument("--request", type=int, help="only the user's N-th request (0-based)")
    gen.add_argument("--model", default=DEFAULT_MODEL, help="default model name, hub id or local folder")
    gen.add_argument("--adapter", help="LoRA adapter folder to attach")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda")
    gen.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16")
    gen.add_argument("--k", type=int, default=PAPER_TOP_K, help="profile items retrieved (paper: 5)")
    gen.add_argument("--max-new-tokens", type=int,
                     help="default: 1536 on CUDA (paper), 256 on CPU (CPU-forced)")
    gen.add_argument("--max-item-words", type=int, help="cut each profile item to this many words")
    gen.add_argument("--temperature", type=float, default=PAPER_INFERENCE_TEMPERATURE,
                     help="sampling temperature (paper: 0.1); 0 for greedy")
    gen.add_argument("--top-p", type=float, default=GenerationSettings.top_p)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(run=cmd_generate)

    val = commands.add_parser("validate", help="check a dataset file and list its bad records")
    val.add_argument("path")
    val.add_argument("--task", required=True, choices=list(TASKS))
    val.add_argument("--family", default="user", choices=SPLIT_FAMILIES)
    val.add_argument("--split", choices=SPLITS)
    val.set_defaults(run=cmd_validate)

    users = commands.add_parser("users", help="list the users of a dataset")
    _dataset_args(users)
    users.set_defaults(run=cmd_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DatasetError, ModelError, PromptTooLongError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
