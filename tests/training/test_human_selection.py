"""Human ratings in the E-step's selection: the rule, and a run whose M-step honours it."""

import dataclasses
import json
import shutil

import pytest

from restpg.jsonl import read_jsonl
from restpg.runs import RunFolder
from restpg.store.database import Store
from restpg.store.generations import GenerationStore
from restpg.store.ratings import Rating, RatingStore
from restpg.store.samples import import_run, sample_version
from restpg.training.human_selection import HumanRule, HumanSelectionError, apply_rule, read_sample_ratings


def kept(*rewards):
    return [{"sample_id": f"round-1:r{i}:0", "reward": reward} for i, reward in enumerate(rewards)]


def rating(annotator, faithfulness=4, copies=False, relevance=4, usefulness=4):
    return {
        "annotator": annotator,
        "faithfulness": faithfulness,
        "relevance": relevance,
        "usefulness": usefulness,
        "copies_output": int(copies),
    }


def test_the_rule_drops_copies_and_unfaithful_samples_and_names_the_raters():
    samples = kept(0.5, 0.4, 0.3, 0.2)
    ratings = {
        "run/round-1:r0:0": [rating("ann", copies=True), rating("bob", copies=True)],
        "run/round-1:r1:0": [rating("ann", faithfulness=1), rating("bob", faithfulness=3)],  # mean 2 <= 2
        "run/round-1:r2:0": [rating("bob", faithfulness=3)],
    }
    training, report = apply_rule(samples, ratings, HumanRule(), "run")
    assert [row["sample_id"] for row in training] == ["round-1:r2:0", "round-1:r3:0"]
    assert [row["weight"] for row in training] == [0.3, 0.2]  # no re-weighting unless asked
    assert report["dropped"] == 2 and report["kept_by_reward"] == 4 and report["kept_rated"] == 3
    assert report["dropped_samples"][0] == {
        "sample_id": "round-1:r0:0",
        "reason": "flagged as copying the real text",
        "annotators": ["ann", "bob"],
    }
    assert report["dropped_samples"][1]["annotators"] == ["ann", "bob"]
    assert report["by_annotator"] == {"ann": {"dropped": 2, "reweighted": 0}, "bob": {"dropped": 2, "reweighted": 0}}
    assert report["rule"]["quorum"] == 2 and report["rule"]["vetoers"] == ()
    # thresholds off: nothing dropped
    training, report = apply_rule(samples, ratings, HumanRule(veto_copy=False, veto_faithfulness=0), "run")
    assert len(training) == 4 and report["dropped"] == 0


def test_one_rater_alone_vetoes_nothing_unless_the_owner_chose_them():
    """A single rater's copy flag or low faithfulness is short of the default quorum of two: the
    sample is trained on and counted as short of quorum. A vetoer the run's owner named, or a
    quorum of one, vetoes alone."""
    samples = kept(0.5, 0.4, 0.3)
    ratings = {
        "run/round-1:r0:0": [rating("mallory", copies=True)],
        "run/round-1:r1:0": [rating("mallory", faithfulness=1)],
        "run/round-1:r2:0": [rating("owner", faithfulness=1), rating("bob", faithfulness=5)],  # mean 3
    }
    training, report = apply_rule(samples, ratings, HumanRule(), "run")
    assert len(training) == 3 and report["dropped"] == 0 and report["veto_short_of_quorum"] == 2
    assert [s["sample_id"] for s in report["short_of_quorum_samples"]] == ["round-1:r0:0", "round-1:r1:0"]
    training, report = apply_rule(samples, ratings, HumanRule(vetoers=("owner",)), "run")
    assert [row["sample_id"] for row in training] == ["round-1:r0:0", "round-1:r1:0"]
    assert report["dropped_samples"][0]["reason"] == "faithfulness 1.00 <= 2 by a vetoer"
    assert report["rule"]["vetoers"] == ("owner",)
    training, report = apply_rule(samples, ratings, HumanRule(quorum=1), "run")
    assert [row["sample_id"] for row in training] == ["round-1:r2:0"] and report["dropped"] == 2


def test_the_human_score_multiplies_the_weight():
    ratings = {"run/round-1:r0:0": [rating("ann", 5, relevance=3, usefulness=4), rating("bob", 3, False, 3, 3)]}
    training, report = apply_rule(kept(0.5, 0.4), ratings, HumanRule(weight=True), "run")
    human = ((5 + 3 + 4) / 3 + 3) / 2
    assert training[0]["weight"] == pytest.approx(0.5 * human / 5) and training[1]["weight"] == 0.4
    assert report["reweighted_samples"][0]["human_score"] == pytest.approx(human, abs=1e-4)


def test_bad_rule_values_and_a_missing_store_are_named(tmp_path):
    with pytest.raises(HumanSelectionError, match="veto_faithfulness"):
        HumanRule(veto_faithfulness=6)
    with pytest.raises(HumanSelectionError, match="quorum: must be a whole number 1-100"):
        HumanRule(quorum=0)
    with pytest.raises(HumanSelectionError, match="does not exist"):
        read_sample_ratings(tmp_path / "nowhere.db", ["x"])
    (tmp_path / "junk.db").write_text("not a database")
    with pytest.raises(HumanSelectionError, match="junk.db"):
        read_sample_ratings(tmp_path / "junk.db", ["x"])


def test_a_run_trains_without_the_vetoed_samples_and_a_started_round_keeps_its_selection(
    tiny_config, tmp_path, monkeypatch
):
    """The E-step's samples are imported and rated; the M-step that starts afterwards trains
    without the vetoed ones; re-running gives the same selection; later ratings change nothing
    once the M-step has started."""
    import restpg.training.em as em

    store = Store(tmp_path / "restpg.db")
    generations, ratings = GenerationStore(store), RatingStore(store)
    config = dataclasses.replace(tiny_config, rounds=1, ratings_from=str(store.path), tau=0.0, veto_by="ann")
    trained = []
    train_model = em.train_model

    def spy(model_config, examples, train_config, output_dir, **kwargs):
        trained.append((output_dir.name, [(e.example_id, e.weight) for e in examples]))
        return train_model(model_config, examples, train_config, output_dir, **kwargs)

    monkeypatch.setattr(em, "train_model", spy)
    run_dir = tmp_path / "run"
    em.run_em(config, run_dir)
    step = RunFolder(run_dir).round(1)
    first = [row["sample_id"] for row in read_jsonl(step.training_set)]
    assert first and trained[-1][0] == "round-1" and [i for i, _ in trained[-1][1]] == first

    # The round's M-step "not started yet": its model and training set removed; the samples stay.
    def unstart():
        for path in (step.adapter, step.metrics, step.training_set, step.human_selection):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    unstart()
    report = import_run(generations, run_dir)
    run_id = RunFolder(run_dir).run_id()
    version = sample_version(run_id, "round-1")
    rows = generations.list(model_version=version)
    assert len(rows) == report.added["round-1"] == len(read_jsonl(step.samples))
    assert {r["sample_status"] for r in rows} <= {"kept", "rejected"}
    vetoed, lowered = [r for r in rows if r["sample_status"] == "kept"][:2]
    for row, copies, faithfulness in ((vetoed, True, 5), (lowered, False, 1)):
        ratings.save(Rating(row["generation_id"], "ann", faithfulness, 3, 3, copies), version, row["reasoning"], "")
    trained.clear()
    em.run_em(config, run_dir)
    second = [row["sample_id"] for row in read_jsonl(step.training_set)]
    dropped = {vetoed["generation_id"].split("/", 1)[1], lowered["generation_id"].split("/", 1)[1]}
    assert second == [s for s in first if s not in dropped]
    assert [i for i, _ in trained[-1][1]] == second  # the M-step's training set has no vetoed sample
    selection = json.loads(step.selection.read_text())
    assert selection["human"]["dropped"] == 2 and selection["human"]["by_annotator"] == {
        "ann": {"dropped": 2, "reweighted": 0}
    }
    assert selection["kept"] == len(first)  # the reward rule's count; the training set is smaller
    assert selection["human"]["rule"]["vetoers"] == ["ann"] and selection["human"]["rule"]["quorum"] == 2
    manifest = json.loads(RunFolder(run_dir).manifest.read_text())
    assert (
        manifest["human_selection"]["1"]["dropped"] == 2 and "dropped_samples" not in manifest["human_selection"]["1"]
    )
    statuses = {r["generation_id"]: r["sample_status"] for r in generations.list(model_version=version)}
    import_run(generations, run_dir)
    statuses = {r["generation_id"]: r["sample_status"] for r in generations.list(model_version=version)}
    assert statuses[vetoed["generation_id"]] == statuses[lowered["generation_id"]] == "vetoed"
    assert sum(s == "trained" for s in statuses.values()) == len(second)

    # A finished round is not changed by a later rating, nor is one whose M-step had started.
    third = [r for r in rows if r["sample_status"] == "kept"][2]
    ratings.save(Rating(third["generation_id"], "bob", 1, 1, 1, True), version, third["reasoning"], "")
    trained.clear()
    em.run_em(config, run_dir)
    assert trained == [] and [row["sample_id"] for row in read_jsonl(step.training_set)] == second
    for path in (step.adapter, step.metrics):  # killed mid-M-step: the training set was fixed at its start
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    em.run_em(config, run_dir)
    assert [i for i, _ in trained[-1][1]] == second


def test_an_old_manifest_without_the_new_fields_still_resumes(tiny_config, tmp_path):
    """A run folder made before ``ratings_from`` existed is not "another config"."""
    import restpg.training.em as em

    run_dir = tmp_path / "run"
    config = dataclasses.replace(tiny_config, rounds=0)
    records = em.load_split(config, "train", config.train_users)
    manifest = em.check_manifest(run_dir, config, "hash")
    for name in ("ratings_from", "veto_copy", "veto_faithfulness", "human_weight", "veto_quorum", "veto_by"):
        del manifest["config"][name]
    del manifest["run_id"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert em.check_manifest(run_dir, config, "hash")["config_hash"] == manifest["config_hash"]
    assert RunFolder(run_dir).run_id().startswith("run-")  # derived, stable
    assert RunFolder(run_dir).run_id() == RunFolder(run_dir).run_id()
    with pytest.raises(em.RunError, match="ratings_from"):
        em.check_manifest(run_dir, dataclasses.replace(config, ratings_from="x.db"), "hash")
    assert records
