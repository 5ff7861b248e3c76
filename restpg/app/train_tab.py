"""The Train tab: start an EM self-training run in a background process, watch its progress, log
and per-round metrics, cancel it. Jobs live in the SQLite store, so a restarted app shows them, and
a finished round's adapter joins the model-version picker of the Explore tab."""

from __future__ import annotations

import html
import json
import time

import gradio as gr  # at the top: handlers' gr.Request hints resolve in this module's globals
import pandas as pd

from ..data.longlamp import PUBLIC_TASKS
from ..errors import PAGE_ERRORS
from ..evaluation.compare import rounds_figure
from ..training.em import PRESETS, REWARDS, default_preset
from .jobs import JOB_LIMITS, JobError, JobRequest

PRESET_DEFAULT = "preset's value"
TRAIN_SFT = "train SFT in this job (stages 1-2)"
PAGE_PRESET_ON_CPU = "cpu-round"  # the page's proposal on a CPU: one small round (restpg.training.em.PRESETS)
REFRESH_SECONDS = 2.0
JOB_COLUMNS = ["job", "status", "stage", "progress", "message", "started", "updated"]


def _job_label(row: dict) -> str:
    return f"{row['run_dir'].rstrip('/').split('/')[-1]} ({row['status']})"


TRAINER_ONLY_FIELDS = ("config", "run_dir", "pid")  # a job's settings and whereabouts


def jobs_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": _job_label(r),
                "status": r["status"],
                "stage": r["stage"],
                "progress": f"{100 * (r['progress'] or 0):.0f}%",
                "message": r["message"] or "",
                "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                "updated": time.strftime("%H:%M:%S", time.localtime(r["updated"])),
            }
            for r in rows
        ],
        columns=JOB_COLUMNS,
    )


def progress_html(row: dict | None) -> str:
    if row is None:
        return "<p>no job selected</p>"
    percent = 100 * (row["progress"] or 0)
    return (
        f"<p><b>{html.escape(row['status'])}</b>: {html.escape(row['stage'] or '')} ({percent:.0f}%)</p>"
        f"<progress max='100' value='{percent:.1f}' style='width:100%'></progress>"
        f"<p>{html.escape(row['message'] or '')}</p>"
    )


def parse_tau(text: str | float | None) -> float | None:
    """The threshold field: empty means the preset's rule (1.0 for the judge, the quantile rule for lexical)."""
    if text is None or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise JobError(f"tau: {text!r} is not a number (leave it empty for the preset's rule)") from None


def metrics_figure(name: str, metrics: dict[int, dict[str, float]]):
    return rounds_figure({name: {r: {"summary": values} for r, values in metrics.items()}} if metrics else {})


def train_tab(parts, version_pickers):
    jobs, service = parts.jobs, parts.service

    def optional(value, cast):
        return None if value in (None, "", 0, PRESET_DEFAULT) else cast(value)

    def sft_choices() -> list[str]:
        """SFT adapters a job can start EM from: the shipped one first, then the runs' own."""
        versions = service.versions()
        return [label for label, v in versions.items() if v.step == "sft" and v.prompt_kind == "reasoning"]

    def start(
        preset,
        task,
        users,
        rounds,
        samples,
        reward,
        tau,
        init,
        reasoning,
        name,
        start_from,
        use_ratings,
        weight_ratings,
        request: gr.Request = None,
    ):
        try:
            parts.access.check_trainer(request)
            adapter = None
            if start_from and start_from != TRAIN_SFT:
                adapter = service.version(start_from).adapter
                if not reasoning:
                    raise JobError(
                        f"an SFT-with-reasoning adapter cannot start ReST-EM without reasoning: choose '{TRAIN_SFT}'"
                    )
            request = JobRequest(
                preset=preset,
                tasks=task,
                users=optional(users, int),
                rounds=optional(rounds, int),
                samples=optional(samples, int),
                reward=optional(reward, str),
                tau=parse_tau(tau),
                init=optional(init, str),
                reasoning=bool(reasoning),
                name=(name or "").strip() or None,
                model=service.model_config.model,
                device=service.model_config.device,
                dtype=service.model_config.dtype,
                sft_adapter=str(adapter) if adapter else None,
                ratings_from=str(service.paths.store) if use_ratings else None,
                human_weight=bool(use_ratings and weight_ratings),
                veto_by=parts.access.vetoers(request) if use_ratings else None,
            )
            run_id = jobs.start(request)
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error
        rows = jobs.jobs()
        return (
            f"started {run_id}",
            gr.update(choices=[(_job_label(r), r["run_id"]) for r in rows], value=run_id),
            jobs_table(rows),
        )

    def cancel(run_id, request: gr.Request = None):
        if not run_id:
            raise gr.Error("choose a job first")
        try:
            parts.access.check_trainer(request)
            return jobs.cancel(run_id)
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error

    def refresh(run_id, known_versions, shown_metrics, request: gr.Request = None):
        rows = jobs.jobs()
        row = next((r for r in rows if r["run_id"] == run_id), None)
        picker = gr.update(
            choices=[(_job_label(r), r["run_id"]) for r in rows],
            value=run_id if row else (rows[0]["run_id"] if rows else None),
        )
        if not parts.access.may_train(request):
            log = "job logs are shown to trainers only (--trainers)"
        else:
            log = jobs.log_tail(run_id) if row else ""
        metrics = [run_id, jobs.round_metrics(run_id)] if row else [None, {}]
        # The plot is redrawn only when its numbers change (the page polls every 2 s).
        figure = (
            gr.skip()
            if metrics == shown_metrics
            else (metrics_figure(_job_label(row).split(" ")[0], metrics[1]) if row else None)
        )
        versions = list(service.versions())
        updates = (
            [gr.update(choices=versions)] * len(version_pickers)
            if versions != known_versions
            else [gr.skip()] * len(version_pickers)
        )
        return (jobs_table(rows), picker, progress_html(row), log, figure, versions, metrics, *updates)

    on_cpu = default_preset() == "cpu-small"
    with gr.Row():
        preset = gr.Dropdown(
            list(PRESETS),
            value=PAGE_PRESET_ON_CPU if on_cpu else default_preset(),
            label="preset (cpu-round: one small round, under 10 minutes on 2 cores; paper: a GPU)",
        )
        task = gr.Dropdown([*PUBLIC_TASKS, "all"], value="all", label="task(s)")
        reward = gr.Dropdown([PRESET_DEFAULT, *REWARDS], value=PRESET_DEFAULT, label="reward")
        tau = gr.Textbox(value="", label="threshold tau (empty: the preset's rule)", placeholder="e.g. 1.0")
        init = gr.Dropdown(
            [PRESET_DEFAULT, "base", "previous"],
            value=PRESET_DEFAULT,
            label="M-step starts from (paper: base; the CPU presets: previous)",
        )
    with gr.Row():
        # 0 means the preset's value; cpu-round is one round on 2 users per task (18 requests), under
        # ten minutes on 2 cores (bench/demo_bench.py --only round).
        users = gr.Number(
            value=0,
            precision=0,
            minimum=0,
            maximum=JOB_LIMITS["users"][1],
            label=f"training users per task for EM (0: preset; at most {JOB_LIMITS['users'][1]})",
        )
        rounds = gr.Number(
            value=0,
            precision=0,
            minimum=0,
            maximum=JOB_LIMITS["rounds"][1],
            label=f"EM rounds (0: preset; at most {JOB_LIMITS['rounds'][1]})",
        )
        samples = gr.Number(
            value=0,
            precision=0,
            minimum=0,
            maximum=JOB_LIMITS["samples"][1],
            label=f"samples per request m (0: preset; at most {JOB_LIMITS['samples'][1]})",
        )
        reasoning = gr.Checkbox(value=True, label="with reasoning (REST-PG); off: ReST-EM baseline")
        name = gr.Textbox(label="job name (an existing job's name resumes it)", placeholder="e.g. pr-small")
    with gr.Row():
        sft_labels = sft_choices()
        start_from = gr.Dropdown(
            [*sft_labels, TRAIN_SFT],
            value=(sft_labels or [TRAIN_SFT])[0],
            label="EM rounds start from (an SFT adapter skips stages 1-2)",
            scale=3,
        )
    with gr.Row():
        # Ratings of the run's E-step samples (Rate tab) steer what each M-step trains on
        # (restpg.training.human_selection): fixed when the round's M-step starts.
        use_ratings = gr.Checkbox(
            value=True,
            label=(
                "raters' ratings steer selection: drop samples that two raters (or one trainer) flag as "
                "copying or rate faithfulness <= 2"
            ),
            elem_id="use-ratings",
        )
        weight_ratings = gr.Checkbox(
            value=False, label="and weight rated samples by their mean human score / 5", elem_id="weight-ratings"
        )
    start_button = gr.Button("Start training job", variant="primary", elem_id="start-job")
    start_note = gr.Textbox(label="", interactive=False, show_label=False)
    jobs_frame = gr.Dataframe(jobs_table([]), label="jobs (this device runs one at a time)", interactive=False)
    with gr.Row():
        job = gr.Dropdown([], label="job", scale=3, allow_custom_value=True)
        cancel_button = gr.Button("Cancel job", variant="stop", elem_id="cancel-job", scale=1)
    progress = gr.HTML()
    figure = gr.Plot(label="held-out metrics per EM round (0 = SFT)")
    log = gr.Textbox(label="log (last lines)", lines=14, interactive=False, autoscroll=True)
    known_versions = gr.State([])
    shown_metrics = gr.State([None, None])  # [run_id, round metrics] of the plot on the page

    start_button.click(
        start,
        [
            preset,
            task,
            users,
            rounds,
            samples,
            reward,
            tau,
            init,
            reasoning,
            name,
            start_from,
            use_ratings,
            weight_ratings,
        ],
        [start_note, job, jobs_frame],
        api_name="start_job",
    )
    cancel_button.click(cancel, job, start_note, api_name="cancel_job")
    refresh_outputs = [jobs_frame, job, progress, log, figure, known_versions, shown_metrics, *version_pickers]
    timer = gr.Timer(REFRESH_SECONDS)
    refresh_inputs = [job, known_versions, shown_metrics]
    timer.tick(refresh, refresh_inputs, refresh_outputs, api_visibility="private", show_progress="hidden")
    job.change(refresh, refresh_inputs, refresh_outputs, api_visibility="private", show_progress="hidden")

    def list_jobs(request: gr.Request = None) -> str:
        """Every job with its state, as JSON (for scripts); configs, folders and process ids for
        trainers only."""
        rows = jobs.jobs()
        if not parts.access.may_train(request):
            rows = [{k: v for k, v in row.items() if k not in TRAINER_ONLY_FIELDS} for row in rows]
        return json.dumps(rows, default=str)

    gr.api(list_jobs, api_name="jobs")
    return refresh, refresh_inputs, refresh_outputs
