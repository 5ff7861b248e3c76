"""``python -m restpg``: the pipeline headless.

generate   reasoning + response for a user's requests, with retrieved items, real text, metrics
train      REST-PG: stage 1 reasoning, stage 2 SFT, stage 3 EM rounds (resumes a run folder)
evaluate   the paper's six methods on held-out records: table (CSV, Markdown) and a plot per round
validate   check a dataset file against LongLaMP's schema and list every bad record
users      list the users of a dataset
ratings    human ratings of reasoning paths: export them (CSV, JSONL), agreement between annotators
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from pathlib import Path

from .em import Cancelled
from .errors import RestpgError
from .hardware import DEVICE_HELP, DTYPE_HELP
from .longlamp import (
    PUBLIC_TASKS,
    SPLIT_FAMILIES,
    SPLITS,
    TASKS,
    DatasetError,
    LoadedRecords,
    load_records,
    sample_path,
)
from .models import (
    DEFAULT_MODEL,
    PAPER_INFERENCE_TEMPERATURE,
    GenerationSettings,
    ModelConfig,
    default_max_new_tokens,
    load_adapter,
    load_model,
)
from .prompts import PromptSettings
from .retrieval import PAPER_TOP_K, item_text


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=list(TASKS), help="LongLaMP task")
    parser.add_argument(
        "--data",
        help="dataset: .json/.jsonl/.parquet file, datasets.save_to_disk folder, "
        "or the hub id LongLaMP/LongLaMP (default: the shipped sample)",
    )
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
        raise DatasetError(
            f"user {args.user!r} has no records in task {args.task} "
            f"({args.family} split family{', split ' + args.split if args.split else ''})"
        )
    if args.request is not None:
        if not 0 <= args.request < len(records):
            raise DatasetError(
                f"user {args.user!r} has {len(records)} request(s); --request {args.request} is out of range"
            )
        records = [records[args.request]]
    loaded = load_model(ModelConfig(model=args.model, device=args.device, dtype=args.dtype))
    if args.adapter:
        load_adapter(loaded, args.adapter)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens or default_max_new_tokens(loaded.device),
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    metrics = LexicalMetrics()
    with tqdm(total=len(records), desc="generating", unit="request", file=sys.stderr) as bar:
        outputs = personalize(
            loaded,
            records,
            metrics,
            k=args.k,
            generation=settings,
            prompt_settings=PromptSettings(max_item_words=args.max_item_words),
            on_batch=bar.update,
        )
    print(
        f"model: {loaded.name}{' + adapter ' + args.adapter if args.adapter else ''} "
        f"on {loaded.device} ({loaded.precision.name}: {loaded.precision.reason})"
    )
    print(f"metrics: {metrics.variant}")
    for out in outputs:
        print("\n" + "=" * 100)
        print(f"record {out.record.record_id}")
        _print_block("request", out.record.input)
        print(f"\n== retrieved profile items ({len(out.retrieved)} of {len(out.record.profile)}, BM25) ==")
        for rank, item in enumerate(out.retrieved, start=1):
            preview = item_text(out.record.task, item.item)
            print(
                f"{rank}. [{item.item_id}] score {item.score:.2f}: {preview[:160]}{'...' if len(preview) > 160 else ''}"
            )
        _print_block("reasoning", out.parsed.reasoning or "(none)")
        _print_block("response", out.parsed.response or "(none)")
        _print_block("real text", out.record.output)
        if out.parsed.problems:
            print("\nparse: " + "; ".join(out.parsed.problems))
        print(
            f"\n{out.generation.new_tokens} new tokens{' (cut at the limit)' if out.generation.truncated else ''}; "
            + ", ".join(f"{name} {value:.4f}" for name, value in out.scores.items())
        )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_records(args.path, args.task, args.family, args.split, strict=False)
    print(
        f"{args.path}: {len(loaded.records)} good record(s), {len(loaded.problems)} bad, {len(loaded.users())} user(s)"
    )
    for problem in loaded.problems:
        print(f"  {problem}")
    for note in loaded.notes:
        print(f"  note: {note}")
    return 1 if loaded.problems else 0


def cmd_users(args: argparse.Namespace) -> int:
    for loaded in load_cli_records(args):
        for user in loaded.users():
            print(f"{user}\t{len(loaded.for_user(user))} request(s)\t{loaded.source}")
    return 0


def cmd_ratings_export(args: argparse.Namespace) -> int:
    from .ratings import RatingStore

    ratings = RatingStore.open_existing(args.store)
    out = (ratings.export_csv if args.format == "csv" else ratings.export_jsonl)(args.out)
    print(f"{len(ratings.all())} rating(s) written to {out}")
    return 0


def cmd_ratings_agreement(args: argparse.Namespace) -> int:
    from .ratings import CRITERIA, RatingStore

    result = RatingStore.open_existing(args.store).agreement()
    print(
        f"Krippendorff's alpha over {result['items']} generation(s) rated by 2+ annotators "
        f"({result['annotators']} annotator(s))"
    )
    for name in (*CRITERIA, "copies_output"):
        level = "nominal" if name == "copies_output" else "ordinal"
        value = result[name]
        print(f"  {name:<14} {'undefined' if value is None else f'{value:.4f}'} ({level})")
    return 0


def em_config_from_args(args: argparse.Namespace):
    """The preset, with every option the user gave on top of it (restpg.options)."""
    from .em import PRESETS, default_preset
    from .options import config_from_flags
    from .train import TrainConfig

    preset = args.preset or default_preset()
    return preset, config_from_flags(PRESETS[preset], args, TrainConfig)


class _TqdmProgress:
    """One tqdm bar per pipeline stage, on stderr."""

    def __init__(self):
        self.stage, self.bar = None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            if self.bar is not None:
                self.bar.close()
            self.stage, self.bar = stage, tqdm(total=total, desc=stage, file=sys.stderr)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_round(round_index: int, metrics: dict) -> None:
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics["summary"].items())
    kept = metrics.get("selection")
    extra = f" | kept {kept['kept']}/{kept['samples']} samples, mean reward {kept['reward_mean']:.3f}" if kept else ""
    print(f"{'SFT' if round_index == 0 else f'round {round_index}'}: {summary}{extra}", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from .em import RunControl, run_em
    from .store import Store

    preset, config = em_config_from_args(args)
    run_dir = Path(args.run_dir)
    store = Store(Path(args.store))
    run_id = str(run_dir.resolve())
    store.start_run(run_id, "em", run_dir, config.to_dict(), os.getpid())
    progress = _TqdmProgress()

    def on_progress(stage, done, total):
        progress(stage, done, total)
        store.update_run(run_id, stage=stage, progress=done / total if total else 0.0)

    def on_round(round_index, metrics):
        _print_round(round_index, metrics)
        store.record_metrics(run_id, round_index, metrics["summary"], metrics.get("selection"))

    from .em import reasoning_source
    from .hardware import choose_precision, pick_device

    device = pick_device(config.device)
    precision = choose_precision(config.dtype, device)
    print(
        f"preset {preset}; run folder {run_dir}; judge (metric{' and reward' if config.reward == 'judge' else ''}): "
        f"{config.judge_model or config.model}"
        f"{' (the base model: a weak judge)' if config.judge_model in (None, config.model) else ''}; "
        f"reasoning by: {reasoning_source(config)}",
        flush=True,
    )
    print(f"device {device}, {precision.name} ({precision.reason}), {torch_threads()} CPU thread(s)", flush=True)
    control = RunControl(on_progress=on_progress, on_round=on_round)
    # SIGTERM (the app's cancel button) stops the run at the next generated token or decoder layer.
    signal.signal(signal.SIGTERM, lambda signum, frame: control.cancel.set())
    try:
        run_em(config, run_dir, control)
    except (KeyboardInterrupt, Cancelled):
        store.update_run(run_id, status="cancelled", message="cancelled; finished rounds are kept")
        print(f"cancelled; finished steps are kept in {run_dir}", file=sys.stderr)
        return 130
    except Exception as error:
        store.update_run(run_id, status="failed", message=str(error))
        raise
    finally:
        progress.close()
    store.update_run(run_id, status="finished", progress=1.0, stage="done")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from .compare import compare_methods
    from .em import RunControl

    preset, config = em_config_from_args(args)
    progress = _TqdmProgress()
    start = time.perf_counter()
    try:
        compare_methods(config, Path(args.run_dir), args.split, RunControl(on_progress=progress))
    finally:
        progress.close()
    out = Path(args.run_dir) / "comparison"
    print((out / "table.md").read_text())
    print((out / "table_by_task.md").read_text())
    print(
        f"preset {preset}; {time.perf_counter() - start:.0f} s; written: {out}/table.csv, table.md, "
        "table_by_task.csv, table_by_task.md, rounds.png, predictions.jsonl"
    )
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from .models import ModelConfig
    from .ship import ship_run

    progress = _TqdmProgress()
    try:
        report = ship_run(
            Path(args.run_dir),
            args.name,
            Path(args.out) if args.out else ship_root(),
            model_config=ModelConfig(device=args.device, dtype=args.dtype)
            if args.dtype != "auto" or args.device != "auto"
            else None,
            on_progress=progress,
        )
    finally:
        progress.close()
    print(
        f"shipped {', '.join(report.steps)} to {report.out_dir} ({report.adapter_bytes / 2**20:.1f} MiB of adapters, "
        f"{report.generations} stored generations)"
    )
    for row in report.quality:
        print(
            f"  {row['version']:<50} {row['split']:<5} final answer {row['answered']:4.0%}  "
            f"rougeL {row['rougeL']:.4f}  meteor {row['meteor']:.4f}  judge {row['judge']:.3f}"
        )
    return 0


def ship_root() -> Path:
    from .versions import SHIPPED_DIR

    return SHIPPED_DIR


def _em_args(parser: argparse.ArgumentParser) -> None:
    """The run's flags: generated from the fields of restpg.em.EMConfig (and TrainConfig's stage
    flags) that declare one, so the help text lives beside the default it changes."""
    from .em import PRESETS, EMConfig
    from .options import add_config_flags
    from .train import TrainConfig

    parser.add_argument("--preset", choices=list(PRESETS), help="default: paper on CUDA, cpu-small on a CPU")
    parser.add_argument("--run-dir", required=True, help="run folder (an existing one is resumed)")
    add_config_flags(parser, EMConfig, TrainConfig)
    _threads_arg(parser)


def _device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    _threads_arg(parser)


def _threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m restpg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="personalized reasoning + response for one user")
    _dataset_args(gen)
    gen.add_argument("--user", required=True, help="user id (the task's user-id field)")
    gen.add_argument("--request", type=int, help="only the user's N-th request (0-based)")
    gen.add_argument("--model", default=DEFAULT_MODEL, help="default model name, hub id or local folder")
    gen.add_argument("--adapter", help="LoRA adapter folder to attach")
    _device_args(gen)
    gen.add_argument("--k", type=int, default=PAPER_TOP_K, help="profile items retrieved (paper: 5)")
    gen.add_argument("--max-new-tokens", type=int, help="default: 1536 on CUDA (paper), 256 on CPU (CPU-forced)")
    gen.add_argument("--max-item-words", type=int, help="cut each profile item to this many words")
    gen.add_argument(
        "--temperature",
        type=float,
        default=PAPER_INFERENCE_TEMPERATURE,
        help="sampling temperature (paper: 0.1); 0 for greedy",
    )
    gen.add_argument("--top-p", type=float, default=GenerationSettings.top_p)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(run=cmd_generate)

    train = commands.add_parser("train", help="REST-PG stages 1-3 (resumable)")
    _em_args(train)
    train.add_argument("--store", default="runs/restpg.db", help="SQLite store the app watches")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="the six methods on held-out records")
    _em_args(evaluate)
    evaluate.add_argument("--split", default="test", choices=SPLITS, help="held-out split")
    evaluate.set_defaults(run=cmd_evaluate)

    ship = commands.add_parser("ship", help="copy a finished run into assets/models with its demo generations")
    ship.add_argument("--run-dir", required=True, help="a finished run folder (every round evaluated)")
    ship.add_argument("--name", default="restpg-sample", help="folder name under the shipped models")
    ship.add_argument("--out", help="shipped models folder (default: the project's assets/models)")
    _device_args(ship)
    ship.set_defaults(run=cmd_ship)

    val = commands.add_parser("validate", help="check a dataset file and list its bad records")
    val.add_argument("path")
    val.add_argument("--task", required=True, choices=list(TASKS))
    val.add_argument("--family", default="user", choices=SPLIT_FAMILIES)
    val.add_argument("--split", choices=SPLITS)
    val.set_defaults(run=cmd_validate)

    users = commands.add_parser("users", help="list the users of a dataset")
    _dataset_args(users)
    users.set_defaults(run=cmd_users)

    ratings = commands.add_parser("ratings", help="human ratings of reasoning paths")
    rating_commands = ratings.add_subparsers(dest="ratings_command", required=True)
    export = rating_commands.add_parser("export", help="every rating, one row each")
    export.add_argument("--store", default="runs/restpg.db", help="SQLite store holding the ratings")
    export.add_argument("--format", default="csv", choices=["csv", "jsonl"])
    export.add_argument("--out", required=True, help="file to write (replaced atomically)")
    export.set_defaults(run=cmd_ratings_export)
    agreement = rating_commands.add_parser("agreement", help="Krippendorff's alpha per criterion")
    agreement.add_argument("--store", default="runs/restpg.db", help="SQLite store holding the ratings")
    agreement.set_defaults(run=cmd_ratings_agreement)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            from .hardware import set_threads

            set_threads(args.threads)
        return args.run(args)
    except RestpgError as error:  # restpg's own errors: one clear line; anything else is a bug, with its traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
