"""The Gradio app: three tabs (Explore, Rate, Train) over the library.

Callbacks are thin: they turn widget values into calls on :class:`restpg.explore.ExploreService`,
:class:`restpg.ratings.RatingStore` and :class:`restpg.jobs.JobManager` (the same code the CLI
runs), and library errors into messages in the page. Text from datasets and models is only ever
put in text widgets (textboxes, plain-text table cells), never rendered as HTML or Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass

from .explore import AppPaths, ExploreService
from .jobs import JobManager
from .models import ModelConfig
from .ratings import RatingStore


@dataclass
class AppParts:
    """What the tabs share: the explore service, the ratings and the background jobs."""

    service: ExploreService
    ratings: RatingStore
    jobs: JobManager


def make_parts(
    model_config: ModelConfig, paths: AppPaths = AppPaths(), judge_model: str | None = None, use_judge: bool = True
) -> AppParts:
    service = ExploreService(model_config, paths, judge_model=judge_model, use_judge=use_judge)
    return AppParts(service, RatingStore(service.store), JobManager(paths.runs_dir, service.store))


def build_app(parts: AppParts):
    import gradio as gr

    from .explore_tab import explore_tab
    from .rate_tab import rate_tab
    from .train_tab import train_tab

    with gr.Blocks(title="restpg: REST-PG explorer", analytics_enabled=False) as demo:
        gr.Markdown(
            "# restpg: reasoning over a user's profile before writing\n"
            "**Explore** a LongLaMP user's profile and the model's reasoning path and response beside "
            "the real text; **Rate** reasoning paths; **Train** REST-PG rounds in the background."
        )
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                explore = explore_tab(parts)
            with gr.Tab("Rate", id="rate", elem_id="rate-panel"):
                rate_load = rate_tab(parts)
            with gr.Tab("Train", id="train"):
                train_load = train_tab(parts, explore["versions"])
        demo.load(*explore["load"], api_visibility="private").then(*explore["show"], api_visibility="private")
        for handler, inputs, outputs in (rate_load, train_load):
            demo.load(handler, inputs, outputs, api_visibility="private")
    return demo


def launch(parts: AppParts, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None, **kwargs):
    """Start the page: a queue so one slow generation never blocks the other users' clicks."""
    from importlib.resources import files

    import gradio as gr

    demo = build_app(parts)
    keys_js = files("restpg").joinpath("rate_keys.js").read_text()
    css = ".rate-active { outline: 3px solid var(--color-accent); border-radius: 6px; }"
    demo.queue(default_concurrency_limit=8)
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        js=keys_js,
        css=css,
        allowed_paths=[str(parts.service.paths.runs_dir / "exports")],
        theme=gr.themes.Default(),
        max_file_size="200mb",
        show_error=True,
        **kwargs,
    )
