"""The Gradio app: four tabs (Explore, Rate, Arena, Train) over the library.

Callbacks are thin: they turn widget values into calls on :class:`restpg.app.explore.ExploreService`,
:class:`restpg.store.ratings.RatingStore` and :class:`restpg.app.jobs.JobManager` (the same code the CLI
runs), and library errors into messages in the page. Text from datasets and models is only ever
put in text widgets (textboxes, plain-text table cells), never rendered as HTML or Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr  # at the top: handlers' gr.Request hints resolve in this module's globals

from ..errors import PAGE_ERRORS
from ..inference.models import ModelConfig
from ..store.arena import PAGE_READ_SECONDS, ArenaStore
from ..store.ratings import RatingStore
from .access import AccessPolicy
from .explore import AppPaths, ExploreService
from .jobs import JobManager

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
    return AppParts(
        service, RatingStore(store), ArenaStore(store, PAGE_READ_SECONDS), JobManager(paths.runs_dir, store), access
    )


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
            with gr.Tab("Rate", id="rate", elem_id="rate-panel") as rate_panel:
                rate = rate_tab(parts)
            with gr.Tab("Arena", id="arena", elem_id="arena-panel") as arena_panel:
                arena = arena_tab(parts)
            with gr.Tab("Results", id="results"):
                results_load = results_tab(parts)
            with gr.Tab("Train", id="train"):
                train_load = train_tab(parts, explore["versions"])

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

        def rate_on_load(annotator, which, version, status_filter, drafts, request: gr.Request = None):
            tab, target = link_target(request)
            if tab == "rate" and target:
                return (*open_item(target, annotator, request, drafts), gr.update())
            return load(annotator, which, version, status_filter, drafts, request)

        # The annotator's name: typed once, in any tab, it fills the others and is remembered in this
        # browser (a reload keeps it); with --auth the login name, not editable.
        remembered = gr.BrowserState("", storage_key="restpg-annotator")
        name_fields = [rate["annotator"], arena["annotator"]]

        def names_on_load(name, request: gr.Request = None):
            login = parts.access.login(request)
            if login:
                return [gr.update(value=login, interactive=False)] * len(name_fields)
            return [gr.update(value=name) if name else gr.update()] * len(name_fields)

        def name_typed(name):  # into the other tabs' fields (never back into the one being typed in)
            return [name] * len(name_fields)

        def name_on_open(name, typed, request: gr.Request = None):
            """A tab opened after the page loaded: the browser renders its fields only now, so the
            name sent at load may not have reached them."""
            login = parts.access.login(request)
            if login:
                return gr.update(value=login, interactive=False)
            return gr.update(value=name) if name and not typed else gr.update()

        for field, panel in zip(name_fields, (rate_panel, arena_panel)):
            others = [other for other in name_fields if other is not field]
            field.input(name_typed, field, [*others, remembered], api_visibility="private", trigger_mode="always_last")
            panel.select(name_on_open, [remembered, field], field, api_visibility="private")
        demo.load(names_on_load, remembered, name_fields, api_visibility="private").then(
            rate_on_load, load_inputs, load_outputs, api_visibility="private"
        )
        demo.load(*explore["load"], api_visibility="private").then(*explore["show"], api_visibility="private")
        demo.load(follow_link, None, tabs, api_visibility="private")
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
    for a host name the app was not started for are refused (restpg.app.hosts: DNS rebinding)."""
    from importlib.resources import files

    from starlette.middleware import Middleware

    from .hosts import AllowedHosts, HostCheck

    host_check = Middleware(HostCheck, allowed=AllowedHosts.for_server(host, allowed_hosts))

    demo = build_app(parts)
    keys_js = files("restpg.app").joinpath("rate_keys.js").read_text()
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
