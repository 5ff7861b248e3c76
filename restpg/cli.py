"""``python -m restpg`` (or ``restpg``): the pipeline headless, and the app.

app        the Gradio app (explore, rate, arena, results, train), as `python demo_app.py`
generate   reasoning + response for a user's requests, with retrieved items, real text, metrics
train      REST-PG: stage 1 reasoning, stage 2 SFT, stage 3 EM rounds (resumes a run folder)
evaluate   the paper's six methods on held-out records: table (CSV, Markdown) and a plot per round
validate   check a dataset file against LongLaMP's schema and list every bad record
users      list the users of a dataset
ratings    human ratings of reasoning paths: add one, export them (CSV, JSONL, Parquet, datasets folder),
           agreement between annotators, the judge's calibration against them
samples    a run's E-step samples in the store: import them, list a round's (to rate them)
arena      the blind arena's votes: leaderboard of model versions, export
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from pathlib import Path

from .app.serve import DESCRIPTION, add_app_arguments
from .data.longlamp import (
    PUBLIC_TASKS,
    SPLIT_FAMILIES,
    SPLITS,
    TASKS,
    DatasetError,
    LoadedRecords,
    load_records,
    sample_path,
)

# Only light modules at the top: the ratings, samples and arena commands start without torch. The
# model side (restpg.training.em, restpg.inference.models, restpg.inference.hardware, torch,
# transformers) is imported by the commands that need it, and the parser declares their flags only
# when such a command is run.
from .errors import InputError, RestpgError

DEFAULT_STORE = "runs/restpg.db"


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

    from .data.prompts import PromptSettings
    from .data.retrieval import item_text
    from .evaluation.metrics import LexicalMetrics
    from .evaluation.personalize import personalize
    from .inference.models import GenerationSettings, ModelConfig, default_max_new_tokens, load_adapter, load_model

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
        f"on {loaded.device} ({loaded.precision.name}: {loaded.precision.reason}; {loaded.packing.reason})"
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
        f"{args.path}: {len(loaded.records)} good record(s), {loaded.problem_count} bad, {len(loaded.users())} user(s)"
    )
    for problem in loaded.problems:
        print(f"  {problem}")
    if loaded.problem_count > len(loaded.problems):
        print(f"  ... and {loaded.problem_count - len(loaded.problems)} more")
    for note in loaded.notes:
        print(f"  note: {note}")
    return 1 if loaded.problems else 0


def cmd_users(args: argparse.Namespace) -> int:
    for loaded in load_cli_records(args):
        for user in loaded.users():
            print(f"{user}\t{len(loaded.for_user(user))} request(s)\t{loaded.source}")
    return 0


def existing_store(path: str | Path):
    """The store at ``path``; a missing file is an error naming it, never a new empty store."""
    from .store.database import Store

    if not Path(path).is_file():
        raise InputError(
            f"store {str(path)!r} does not exist (pass --store with the app's store, e.g. {DEFAULT_STORE})"
        )
    return Store(Path(path))


def cmd_ratings_export(args: argparse.Namespace) -> int:
    from .store.ratings import RatingStore

    ratings = RatingStore.open_existing(args.store)
    out = ratings.export(args.out, args.format)
    print(f"{len(ratings.all())} rating(s) written to {out} ({args.format})")
    return 0


def cmd_ratings_add(args: argparse.Namespace) -> int:
    from .store.generations import GenerationStore
    from .store.ratings import Rating, RatingStore

    ratings = RatingStore.open_existing(args.store)
    rating = Rating(
        args.generation,
        args.annotator,
        args.faithfulness,
        args.relevance,
        args.usefulness,
        args.copies,
        args.comment,
    )
    rating.validate()  # bad scores are named before the generation is looked up
    row = GenerationStore(ratings.store).get(args.generation)  # the exact text rated, as the Rate tab saves it
    saved = ratings.save(rating, row["model_version"], row["reasoning"], row["response"])
    edited = saved["created"] != saved["updated"]
    scores = ", ".join(f"{name} {saved[name]}" for name in ("faithfulness", "relevance", "usefulness"))
    print(
        f"{'updated' if edited else 'saved'} rating of {saved['generation_id']} ({saved['model_version']}) "
        f"by {saved['annotator']}: {scores}{', copies the output' if saved['copies_output'] else ''}"
    )
    return 0


def cmd_ratings_calibration(args: argparse.Namespace) -> int:
    from .store.calibration import calibration, format_calibration

    store = existing_store(args.store)
    result = calibration(
        store, group_by=args.by, annotator=args.annotator, groups=args.group, bootstrap=args.bootstrap, seed=args.seed
    )
    print(format_calibration(result), end="")
    return 0


def _status_counts(counts: dict[str, int]) -> str:
    from .store.samples import SAMPLE_STATUSES

    order = [*SAMPLE_STATUSES, *sorted(set(counts) - set(SAMPLE_STATUSES))]
    return ", ".join(f"{status} {counts[status]}" for status in order if counts.get(status))


def cmd_samples_import(args: argparse.Namespace) -> int:
    from .runs import RunFolder
    from .store.database import Store
    from .store.generations import GenerationStore
    from .store.samples import import_run

    RunFolder(Path(args.run_dir)).run_id()  # not a run folder: an error before any store is created
    report = import_run(GenerationStore(Store(Path(args.store))), args.run_dir)
    print(f"run {report.run_id}: {report.total_added} sample(s) added to {args.store}")
    if not report.added:
        print("  no round has E-step samples yet")
    for step, added in report.added.items():
        counts = report.statuses.get(step, {})
        print(f"  {step}: {added} added, {sum(counts.values())} in all ({_status_counts(counts)})")
    return 0


def _preview(text: str | None, chars: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= chars else flat[: chars - 3].rstrip() + "..."


def cmd_samples_list(args: argparse.Namespace) -> int:
    from .runs import RunFolder
    from .store.database import Store
    from .store.generations import GenerationStore
    from .store.samples import import_run, listed_samples, needs_import, sample_rounds, sample_status_counts

    if args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    run = RunFolder(Path(args.run_dir))
    run_id = run.run_id()
    generations = GenerationStore(Store(Path(args.store)))
    if needs_import(generations, run, run_id):  # the first listing imports the run (as `samples import`)
        report = import_run(generations, args.run_dir)
        if report.total_added:
            print(f"imported {report.total_added} sample(s) of run {run_id} into {args.store}")
    rounds = sample_rounds(generations, run_id)
    if args.round not in rounds:
        raise InputError(
            f"run {run_id} has no E-step samples for round {args.round}; "
            f"rounds with samples: {', '.join(map(str, rounds)) or 'none'}"
        )
    counts = sample_status_counts(generations, run_id, args.round)
    matching, rows = listed_samples(generations, run_id, args.round, args.status, args.limit)
    which = f"{args.status} " if args.status else ""
    print(
        f"run {run_id} round {args.round}: {sum(counts.values())} sample(s) ({_status_counts(counts)}); "
        f"showing {len(rows)} of {matching} {which}sample(s), in the order they were sampled"
    )
    for row in rows:
        print(f"\n{row['generation_id']}  {row['sample_status']}  reward {row['reward']:.4f}")
        print(f"  reasoning: {_preview(row['reasoning'])}")
        print(f"  answer:    {_preview(row['response'])}")
    if rows:
        store = "" if args.store == DEFAULT_STORE else f" --store {args.store}"
        print(
            "\nrate one: python -m restpg ratings add --generation ID --annotator NAME "
            f"--faithfulness N --relevance N --usefulness N{store}"
        )
    return 0


def cmd_samples_export(args: argparse.Namespace) -> int:
    from .runs import RunFolder
    from .store.generations import GenerationStore

    run_id = RunFolder(Path(args.run_dir)).run_id() if args.run_dir else None
    generations = GenerationStore(existing_store(args.store))
    out = generations.export_samples(args.out, args.format, run_id)
    print(f"{len(generations.samples(run_id))} sample(s) written to {out} ({args.format})")
    return 0


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def cmd_arena_leaderboard(args: argparse.Namespace) -> int:
    from .store.arena import ArenaStore

    rows = ArenaStore(existing_store(args.store)).leaderboard(args.bootstrap, args.seed)
    if not rows:
        print("no arena votes yet: vote in the app's Arena tab, then run this again")
        return 0

    def rating(row: dict) -> str:
        if row["rating"] is None:
            return "n/a"
        ci = "" if row["ci_low"] is None else f" [{row['ci_low']:.0f}, {row['ci_high']:.0f}]"
        return f"{row['rating']:.0f}{ci}"

    print(
        _table(
            ["version", "rating [95% CI]", "votes", "W/L/T", "both bad", "win rate"],
            [
                [
                    row["version"],
                    rating(row),
                    str(row["votes"]),
                    f"{row['wins']}/{row['losses']}/{row['ties']}",
                    str(row["both_bad"]),
                    "n/a" if row["win_rate"] is None else f"{row['win_rate']:.0%}",
                ]
                for row in rows
            ],
        )
    )
    print(
        f"\nBradley-Terry ratings (Elo-like: mean 1000, +400 = 10:1 odds); CI: percentile bootstrap over votes "
        f"({args.bootstrap} resamples, seed {args.seed}); a tie is half a win; both-bad votes are not in the fit"
    )
    return 0


def cmd_arena_export(args: argparse.Namespace) -> int:
    from .store.arena import ArenaStore

    arena = ArenaStore(existing_store(args.store))
    out = arena.export(args.out, args.format)
    print(f"{len(arena.votes())} vote(s) written to {out} ({args.format})")
    return 0


def cmd_ratings_agreement(args: argparse.Namespace) -> int:
    from .store.ratings import CRITERIA, RatingStore

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
    from .options import config_from_flags
    from .training.em import PRESETS, default_preset
    from .training.train import TrainConfig

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

    from .store.database import Store
    from .training.em import Cancelled, RunControl, run_em

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

    from .inference.hardware import choose_precision, pick_device
    from .training.em import reasoning_source

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

    from .evaluation.compare import OUTPUTS, compare_methods, compare_runs
    from .training.em import RunControl

    progress = _TqdmProgress()
    start = time.perf_counter()
    try:
        if args.runs:  # finished runs (the shipped ones): nothing is trained, their adapters are scored
            config, runs = _finished_runs(args.runs)
            out = Path(args.out) if args.out else Path(args.runs[0]) / "comparison"
            compare_runs(config, runs, out, args.split, RunControl(on_progress=progress), reuse=args.reuse)
            preset = "the runs' own config"
        else:
            if not args.run_dir:
                raise InputError("evaluate needs --run-dir (to train and compare) or --runs (finished runs)")
            preset, config = em_config_from_args(args)
            out = Path(args.run_dir) / "comparison"
            compare_methods(config, Path(args.run_dir), args.split, RunControl(on_progress=progress))
            runs = {"rest-pg": Path(args.run_dir) / "rest-pg"}
        if args.profile_swap:
            _profile_swap(config, runs["rest-pg"], args.split, out)
    finally:
        progress.close()
    for name in ("table.md", "table_by_task.md") + (("profile_swap.md",) if args.profile_swap else ()):
        print((out / name).read_text())
    print(f"{preset}; {time.perf_counter() - start:.0f} s; written: {out}/{', '.join(OUTPUTS)}")
    return 0


def _finished_runs(paths: list[str]):
    """The config of a REST-PG run (its manifest) and the runs {"rest-pg", "rest-em"} given as
    folders (the REST-PG one, and optionally one without reasoning, in any order): each is checked
    to be finished."""
    import json

    from .runs import RunFolder
    from .training.em import EMConfig, RunError

    found = {}
    for path in map(Path, paths):
        manifest = RunFolder(path).manifest
        if not manifest.exists():
            raise RunError(f"{path}: no manifest.json (not a run folder)")
        config = EMConfig.from_dict(json.loads(manifest.read_text())["config"])
        if not RunFolder(path).round(config.rounds).metrics.exists():
            raise RunError(f"{path}: unfinished run (no metrics for round {config.rounds})")
        name = "rest-pg" if config.reasoning else "rest-em"
        if name in found:
            raise RunError(
                f"--runs: {found[name][0]} and {path} are both runs {'with' if config.reasoning else 'without'} reasoning"
            )
        found[name] = (path, config)
    if "rest-pg" not in found:
        raise RunError("--runs needs a finished run with reasoning (REST-PG), and optionally one without (ReST-EM)")
    return found["rest-pg"][1], {name: path for name, (path, _) in found.items()}


def _profile_swap(config, rest_pg: Path, split: str, out: Path) -> None:
    """The profile-swap check on the REST-PG run's SFT step (SFT with reasoning)."""
    from .data.prompts import PromptSettings
    from .evaluation.profile_swap import profile_swap, write_swap_table
    from .runs import RunFolder
    from .training.em import Models, load_split

    models = Models(config)
    records = load_split(config, split, config.eval_users)
    loaded = models.generator(RunFolder(rest_pg).sft.adapter)
    rows = profile_swap(
        loaded,
        records,
        config.prompt_kind,
        models.metrics(),
        config.k,
        PromptSettings(max_item_words=config.max_item_words),
        config.max_new_tokens,
        config.max_input_tokens,
        batch_size=config.generation_batch_size,
        seed=config.seed,
    )
    write_swap_table(rows, out, f"the SFT-with-reasoning step of {rest_pg}", split)


def cmd_ship(args: argparse.Namespace) -> int:
    from .app.ship import ship_run
    from .inference.models import ModelConfig

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
            with_base=not args.without_base,
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
    from .training.versions import SHIPPED_DIR

    return SHIPPED_DIR


def _em_args(parser: argparse.ArgumentParser, run_dir_required: bool = True) -> None:
    """The run's flags: generated from the fields of restpg.training.em.EMConfig (and TrainConfig's stage
    flags) that declare one, so the help text lives beside the default it changes."""
    from .options import add_config_flags
    from .training.em import PRESETS, EMConfig
    from .training.train import TrainConfig

    parser.add_argument("--preset", choices=list(PRESETS), help="default: paper on CUDA, cpu-small on a CPU")
    parser.add_argument("--run-dir", required=run_dir_required, help="run folder (an existing one is resumed)")
    add_config_flags(parser, EMConfig, TrainConfig)
    _threads_arg(parser)


def _device_args(parser: argparse.ArgumentParser) -> None:
    from .inference.hardware import DEVICE_HELP, DTYPE_HELP

    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    _threads_arg(parser)


def _threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core)")


def _store_arg(parser: argparse.ArgumentParser, what: str = "holding the ratings") -> None:
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"SQLite store {what} (default: {DEFAULT_STORE})")


def _export_args(parser: argparse.ArgumentParser) -> None:
    from .store.exports import EXPORT_FORMATS, FORMAT_HELP

    parser.add_argument("--format", default="csv", choices=EXPORT_FORMATS, help=FORMAT_HELP)
    parser.add_argument(
        "--out",
        required=True,
        help="file to write (hf: a folder), replaced atomically; an existing folder only if it is an earlier hf export",
    )


def _generate_command(gen: argparse.ArgumentParser) -> None:
    from .data.retrieval import PAPER_TOP_K
    from .inference.models import DEFAULT_MODEL, PAPER_INFERENCE_TEMPERATURE, GenerationSettings

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


def _train_command(train: argparse.ArgumentParser) -> None:
    _em_args(train)
    train.add_argument("--store", default=DEFAULT_STORE, help="SQLite store the app watches")
    train.set_defaults(run=cmd_train)


def _evaluate_command(evaluate: argparse.ArgumentParser) -> None:
    _em_args(evaluate, run_dir_required=False)
    evaluate.add_argument("--split", default="test", choices=SPLITS, help="held-out split")
    evaluate.add_argument(
        "--runs",
        nargs="+",
        metavar="RUN",
        help="score finished runs instead of training: one with reasoning (REST-PG) and optionally one "
        "without (ReST-EM), e.g. assets/models/restpg-sample; the REST-PG run's own config applies. "
        "Without a ReST-EM run, SFT and ReST-EM are left out and differences are to SFT with reasoning",
    )
    evaluate.add_argument("--out", help="with --runs: the folder for the tables (default: <first run>/comparison)")
    evaluate.add_argument(
        "--reuse",
        help="with --runs: an earlier predictions.jsonl; a method whose model, adapter weights, prompt and "
        "settings are the same there is rescored from its stored outputs instead of generated again",
    )
    evaluate.add_argument(
        "--profile-swap",
        action="store_true",
        help="also answer each held-out request with half and all of its profile swapped for another user's, "
        "with the SFT-with-reasoning step (the paper's personalization check): profile_swap.csv/.md",
    )
    evaluate.set_defaults(run=cmd_evaluate)


def _ship_command(ship: argparse.ArgumentParser) -> None:
    ship.add_argument("--run-dir", required=True, help="a finished run folder (every round evaluated)")
    ship.add_argument("--name", default="restpg-sample", help="folder name under the shipped models")
    ship.add_argument("--out", help="shipped models folder (default: the project's assets/models)")
    ship.add_argument(
        "--without-base",
        action="store_true",
        help="store no base-model generations (another shipped run, restpg-sample, already stores them)",
    )
    _device_args(ship)
    ship.set_defaults(run=cmd_ship)


def _validate_command(val: argparse.ArgumentParser) -> None:
    val.add_argument("path")
    val.add_argument("--task", required=True, choices=list(TASKS))
    val.add_argument("--family", default="user", choices=SPLIT_FAMILIES)
    val.add_argument("--split", choices=SPLITS)
    val.set_defaults(run=cmd_validate)


def _users_command(users: argparse.ArgumentParser) -> None:
    _dataset_args(users)
    users.set_defaults(run=cmd_users)


def _ratings_command(ratings: argparse.ArgumentParser) -> None:
    rating_commands = ratings.add_subparsers(dest="ratings_command", required=True)

    add = rating_commands.add_parser(
        "add",
        help="save one rating of a stored generation (a new one, or an edit of yours)",
        description="Save one rating, with the exact reasoning and response of the generation, as the Rate tab "
        "does. Find ids to rate with `samples list`, the app's Rate tab, or an export of the store.",
    )
    _store_arg(add)
    add.add_argument("--generation", required=True, metavar="ID", help="the generation's id")
    add.add_argument("--annotator", required=True, metavar="NAME", help="your annotator name")
    add.add_argument("--faithfulness", required=True, type=int, metavar="1-5", help="faithful to the user's profile")
    add.add_argument("--relevance", required=True, type=int, metavar="1-5", help="relevant to the request")
    add.add_argument("--usefulness", required=True, type=int, metavar="1-5", help="useful for writing the response")
    add.add_argument("--copies", action="store_true", help="flag: the reasoning copies the expected output")
    add.add_argument("--comment", default="", metavar="TEXT", help="free-text comment")
    add.set_defaults(run=cmd_ratings_add)

    export = rating_commands.add_parser("export", help="every rating, one row each (annotator included)")
    _store_arg(export)
    _export_args(export)
    export.set_defaults(run=cmd_ratings_export)

    agreement = rating_commands.add_parser("agreement", help="Krippendorff's alpha per criterion")
    _store_arg(agreement)
    agreement.set_defaults(run=cmd_ratings_agreement)

    calibration = rating_commands.add_parser(
        "calibration",
        help="does the judge agree with people? rank correlations of ratings with the judge and ROUGE-L",
    )
    _store_arg(calibration)
    calibration.add_argument(
        "--by",
        default="model_version",
        metavar="model_version|task",
        help="group rated generations by this column of the generations table (default: model_version)",
    )
    calibration.add_argument("--annotator", metavar="NAME", help="only this annotator's ratings (default: all)")
    calibration.add_argument(
        "--group", nargs="+", action="extend", metavar="G", help="only these groups (default: every group)"
    )
    calibration.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    calibration.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    calibration.set_defaults(run=cmd_ratings_calibration)


def _samples_command(samples: argparse.ArgumentParser) -> None:
    from .store.samples import SAMPLE_STATUSES

    sample_commands = samples.add_subparsers(dest="samples_command", required=True)

    imp = sample_commands.add_parser(
        "import", help="add a run's E-step samples to the store (to rate them), update their statuses"
    )
    imp.add_argument("--run-dir", required=True, metavar="DIR", help="run folder")
    _store_arg(imp, "to import into (created if missing)")
    imp.set_defaults(run=cmd_samples_import)

    listing = sample_commands.add_parser(
        "list",
        help="a round's E-step samples: id, status, reward, reasoning and answer (imports the run first if needed)",
    )
    listing.add_argument("--run-dir", required=True, metavar="DIR", help="run folder")
    listing.add_argument("--round", required=True, type=int, metavar="N", help="EM round (1, 2, ...)")
    listing.add_argument("--status", choices=SAMPLE_STATUSES, help="only samples with this status")
    listing.add_argument("--limit", type=int, default=20, help="at most this many samples (default: 20)")
    _store_arg(listing, "holding the samples (created if missing: the run is imported)")
    listing.set_defaults(run=cmd_samples_list)

    export = sample_commands.add_parser("export", help="the stored E-step samples, one row each, every column")
    export.add_argument("--run-dir", metavar="DIR", help="only this run's samples (default: every run's)")
    _store_arg(export, "holding the samples")
    _export_args(export)
    export.set_defaults(run=cmd_samples_export)


def _arena_command(arena: argparse.ArgumentParser) -> None:
    arena_commands = arena.add_subparsers(dest="arena_command", required=True)

    board = arena_commands.add_parser("leaderboard", help="Bradley-Terry ratings of the model versions from the votes")
    _store_arg(board, "holding the votes")
    board.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    board.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    board.set_defaults(run=cmd_arena_leaderboard)

    export = arena_commands.add_parser("export", help="every voted match, one row each (versions revealed)")
    _store_arg(export, "holding the votes")
    _export_args(export)
    export.set_defaults(run=cmd_arena_export)


# name: (help, fills in the command's arguments). Filling train's and evaluate's imports restpg.training.em
# (and torch): build_parser(only=...) fills only the command being run.
COMMANDS = {
    "app": (DESCRIPTION, add_app_arguments),
    "generate": ("personalized reasoning + response for one user", _generate_command),
    "train": ("REST-PG stages 1-3 (resumable)", _train_command),
    "evaluate": ("the six methods on held-out records", _evaluate_command),
    "ship": ("copy a finished run into assets/models with its demo generations", _ship_command),
    "validate": ("check a dataset file and list its bad records", _validate_command),
    "users": ("list the users of a dataset", _users_command),
    "ratings": ("human ratings of reasoning paths", _ratings_command),
    "samples": ("a run's E-step samples in the store: import, list, export", _samples_command),
    "arena": ("the blind arena's votes: leaderboard, export", _arena_command),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with ``only``, the arguments of that command alone (the others keep
    their name and help), so that `python -m restpg ratings ...` never imports torch."""
    parser = argparse.ArgumentParser(
        prog="python -m restpg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, fill) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            fill(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    args = build_parser(only=command).parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            from .inference.hardware import set_threads

            set_threads(args.threads)
        return args.run(args)
    except RestpgError as error:  # restpg's own errors: one clear line; anything else is a bug, with its traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
