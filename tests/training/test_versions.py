"""Model versions: base, shipped, and every finished step under the runs folder, each with the
prompt its run trained it on."""

import json

from restpg.training.versions import BASE_VERSION, best_shipped, find_versions


def make_step(root, run, step, config=None, summary=None):
    adapter = root / run / step / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    if config is not None:
        (root / run / "manifest.json").write_text(json.dumps({"config": config, "models": {"teacher": "hand-written"}}))
    if summary is not None:
        (root / run / step / "metrics.json").write_text(json.dumps({"summary": summary}))
    return adapter


def test_versions_carry_their_runs_prompt_and_other_base_models_are_left_out(tmp_path):
    runs, shipped = tmp_path / "runs", tmp_path / "shipped"
    make_step(
        shipped,
        "sample",
        "sft",
        {
            "model": "m",
            "reasoning": True,
            "k": 5,
            "max_item_words": 25,
            "sft": {"max_input_tokens": 900},
            "mstep": {"max_input_tokens": 768},
        },
        {"rougeL": 0.2},
    )
    make_step(shipped, "sample", "round-1", summary={"rougeL": 0.25, "empty_answers": 0.0})
    make_step(runs, "jobs/no-reasoning", "sft", {"model": "m", "reasoning": False, "k": 3, "max_item_words": None})
    make_step(runs, "other-base", "sft", {"model": "another-model", "reasoning": True})
    make_step(runs, "no-manifest", "round-2")
    versions = find_versions(runs, "m", 25, shipped)
    assert list(versions) == [
        BASE_VERSION,
        "shipped sample sft",
        "shipped sample round-1",
        "jobs/no-reasoning sft",
        "no-manifest round-2",
    ]
    assert versions[BASE_VERSION].adapter is None and versions[BASE_VERSION].max_item_words == 25
    sft = versions["shipped sample sft"]
    assert (sft.prompt_kind, sft.k, sft.max_item_words, sft.reasoning_by, sft.shipped) == (
        "reasoning",
        5,
        25,
        "hand-written",
        True,
    )
    plain = versions["jobs/no-reasoning sft"]
    assert (plain.prompt_kind, plain.k, plain.max_item_words, plain.shipped) == ("rag", 3, None, False)
    assert versions["no-manifest round-2"].prompt_kind == "reasoning"  # no manifest: the paper's defaults
    assert sft.max_input_tokens == 768 and versions["no-manifest round-2"].max_input_tokens is None  # the run's budget


def test_the_page_opens_on_the_best_shipped_version(tmp_path):
    shipped = tmp_path / "shipped"
    make_step(shipped, "s", "sft", {"model": "m"}, {"rougeL": 0.20})
    make_step(shipped, "s", "round-1", summary={"rougeL": 0.18})
    make_step(shipped, "s", "round-2", summary={"rougeL": 0.20})  # ties SFT: the later round wins
    assert best_shipped(find_versions(tmp_path / "runs", "m", None, shipped)) == "shipped s round-2"
    assert best_shipped(find_versions(tmp_path / "runs", "m", None, tmp_path / "none")) == BASE_VERSION
    # A shipped version without reasoning (ReST-EM) scoring higher: the page still opens on one that reasons.
    make_step(shipped, "t", "round-1", {"model": "m", "reasoning": False}, {"rougeL": 0.30})
    assert best_shipped(find_versions(tmp_path / "runs", "m", None, shipped)) == "shipped s round-2"
    only_plain = tmp_path / "plain"
    make_step(only_plain, "t", "round-1", {"model": "m", "reasoning": False}, {"rougeL": 0.30})
    assert best_shipped(find_versions(tmp_path / "runs", "m", None, only_plain)) == "shipped t round-1"
