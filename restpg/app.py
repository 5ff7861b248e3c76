"""The Gradio app: four tabs (Explore, Rate, Arena, Train) over the library.

Callbacks are thin: they turn widget values into calls on :class:`restpg.explore.ExploreService`,
:class:`restpg.ratings.RatingStore` and :class:`restpg.jobs.JobManager` (the same code the CLI
runs), and library errors into messages in the page. Text from datasets and models is only ever
put in text widgets (textboxes, plain-text table cells), never rendered as HTML or Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr  # at the top: handlers' gr.Request hints resolve in this module's globals

from .access import AccessPolicy
from .arena import ArenaStore
from .errors import PAGE_ERRORS
from .explore import AppPaths, ExploreService
from .jobs import JobManager
from .models import ModelConfig
from .ratings import RatingStore

QUEUE_LIMIT = 64  # requests waiting in the page's queue, all users together
UPLOAD_CACHE = (3600, 3600)  # (how often, how old) in seconds: Gradio's delete_cache


@dataclass
class AppParts:
    """What the tabs share: the explore service, the ratings, the arena's votes, the background
    jobs, and who may do what."""

    service: ExploreService
    ratings: RatingStore
    arena: ArenaStore
    jobs: JobManager
    access: AccessPolicy = AccessPolicy()


def make_parts(
    model_config: ModelConfig,
    paths: AppPaths = AppPaths(),
    judge_model: str | None = None,
    use_judge: bool = True,
    access: AccessPolicy = AccessPolicy(),
) -> AppParts:
    service = ExploreService(model_config, paths, judge_model=judge_model, use_judge=use_judge)
    service.import_samples()  # the runs' E-step samples, rateable from the first page
    store = service.store
    return AppParts(service, RatingStore(store), ArenaStore(store), JobManager(paths.runs_dir, store), access)


def build_app(parts: AppParts):
    from .arena_tab import arena_tab
    from .explore_tab import explore_tab
    from .rate_tab import rate_tab
    from .results_tab import results_tab
    from .train_tab import train_tab

    # Gradio's cache of uploaded files and exports: every hour, files older than an hour are deleted
    # (a validated upload is copied to data/uploads first; an export link lives an hour)
    with gr.Blocks(title="restpg: REST-PG explorer", analytics_enabled=False, delete_cache=UPLOAD_CACHE) as demo:
        gr.Markdown(
            "# restpg: reasoning over a user's profile before writing\n"
            "**Explore** a LongLaMP user's profile and the model's reasoning path and response beside "
            "the real text; **Rate** reasoning paths and the samples EM trains on; compare versions blind "
            "in the **Arena**; see REST-PG against its baselines in **Results**; **Train** REST-PG rounds in "
            "the background."
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                explore = explore_tab(parts)
            with gr.Tab("Rate", id="rate", elem_id="rate-panel"):
                rate = rate_tab(parts)
            with gr.Tab("Arena", id="arena", elem_id="arena-panel"):
                arena = arena_tab(parts)
            with gr.Tab("Results", id="results"):
                results_load = results_tab(parts)
            with gr.Tab("Train", id="train"):
                train_load = train_tab(parts, explore["versions"])

        def logged_in(request: gr.Request = None):
            """With --auth, the annotator fields hold the login name and cannot be edited."""
            login = parts.access.login(request)
            field = gr.update(value=login, interactive=False) if login else gr.update()
            return field, field

        def link_target(request) -> tuple[str, str | None]:
            """The tab and the generation a link opens: ``?rate=<id>`` in Rate; ``?generation=<id>`` in
            Explore, or in Rate when Explore cannot show it (an E-step sample, an unknown id: Rate
            says why)."""
            query = dict(getattr(request, "query_params", None) or {})
            if query.get("rate"):
                return "rate", query["rate"]
            if query.get("generation"):
                try:
                    located = parts.service.locate(query["generation"])
                except PAGE_ERRORS:
                    located = None
                return ("explore" if located else "rate"), query["generation"]
            return "explore", None

        def follow_link(request: gr.Request = None):
            tab, target = link_target(request)
            return gr.Tabs(selected=tab) if target else gr.update()

        load, load_inputs, load_outputs = rate["load"]
        open_item, _ = rate["open"]

        def rate_on_load(annotator, which, version, status_filter, request: gr.Request = None):
            tab, target = link_target(request)
            if tab == "rate" and target:
                return (*open_item(target, annotator, request), gr.update())
            return load(annotator, which, version, status_filter, request)

        demo.load(logged_in, None, [rate["annotator"], arena["annotator"]], api_visibility="private")
        demo.load(*explore["load"], api_visibility="private").then(*explore["show"], api_visibility="private")
        demo.load(follow_link, None, tabs, api_visibility="private")
        demo.load(rate_on_load, load_inputs, load_outputs, api_visibility="private")
        for handler, inputs, outputs in (arena["load"], results_load, train_load):
            demo.load(handler, inputs, outputs, api_visibility="private")
    return demo


def launch(
    parts: AppParts,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: list[tuple[str, str]] | None = None,
    allowed_hosts: list[str] | tuple[str, ...] = (),
    **kwargs,
):
    """Start the page: a queue so one slow generation never blocks the other users' clicks.
    Errors reach the page as their messages (restpg's own); never as Python tracebacks. Requests
    for a host name the app was not started for are refused (restpg.hosts: DNS rebinding)."""
    from importlib.resources import files

    from starlette.middleware import Middleware

    from .hosts import AllowedHosts, HostCheck

    host_check = Middleware(HostCheck, allowed=AllowedHosts.for_server(host, allowed_hosts))

    demo = build_app(parts)
    keys_js = files("restpg").joinpath("rate_keys.js").read_text()
    css = ".rate-active { outline: 3px solid var(--color-accent); border-radius: 6px; }"
    # At most QUEUE_LIMIT requests wait at once, everyone's together; past it Gradio answers the
    # page "queue is full" at once instead of piling work up (generation runs one at a time).
    demo.queue(default_concurrency_limit=8, max_size=QUEUE_LIMIT)
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth or None,
        js=keys_js,
        css=css,
        allowed_paths=[str(parts.service.paths.runs_dir / "exports")],
        theme=gr.themes.Default(),
        max_file_size="200mb",
        show_error=False,
        app_kwargs={"middleware": [host_check]},
        **kwargs,
    )
