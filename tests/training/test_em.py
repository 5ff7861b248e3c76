"""The EM pipeline's mechanics on the tiny model: run, resume after a kill, cancel, bad runs."""

import dataclasses
import json

import pytest
import torch

from helpers import DEVICES, TINY_TRAIN
from restpg.training.em import PRESETS, Cancelled, EMConfig, RunControl, RunError, run_em, select_samples


def sample(record_id, reward, answer="a", reasoning="r"):
    return {"record_id": record_id, "reward": reward, "answer": answer, "reasoning": reasoning}


def test_selection_rules():
    judge = EMConfig(reward="judge")
    rows = [sample("x", 1.0), sample("x", 0.7), sample("y", 1.0, answer=" "), sample("y", 1.0, reasoning="")]
    assert [r["reward"] for r in select_samples(rows, judge)] == [1.0]  # tau 1.0; empty answer/reasoning out
    many = [sample("x", 1.0)] * 15
    assert len(select_samples(many, judge)) == 10  # at most 10 per input (paper)
    lexical = EMConfig(reward="rougeL")
    rows = [sample("x", v) for v in (0.1, 0.2, 0.3, 0.4, 0.5)] + [sample("y", 0.0), sample("y", 0.0)]
    kept = select_samples(rows, lexical)
    assert sorted(r["reward"] for r in kept) == [0.4, 0.5]  # per-input 0.75 quantile; all-zero inputs keep nothing
    assert len(select_samples(rows, dataclasses.replace(lexical, tau=0.25))) == 3  # absolute tau
    no_reasoning = dataclasses.replace(judge, reasoning=False)
    assert len(select_samples([sample("x", 1.0, reasoning="")], no_reasoning)) == 1


def test_presets_mark_the_paper_defaults():
    paper = PRESETS["paper"]
    assert (paper.rounds, paper.samples_per_input, paper.temperature, paper.max_kept_per_input) == (3, 32, 0.7, 10)
    assert paper.reward == "judge" and paper.tau is None and paper.init == "base" and paper.k == 5
    assert paper.sft.finetuning == paper.mstep.finetuning == "full" and paper.mstep.optimizer == "adafactor"
    assert paper.mstep.loss == "sum" and paper.mstep.select_by == "reward" and paper.mstep.validation_examples == 1024
    assert paper.mstep.rate == 5e-6 and not paper.sft_mix
    small = PRESETS["cpu-small"]
    assert small.train_users is None and small.samples_per_input == 8 and small.max_new_tokens == 256
    assert small.mstep.loss == "sum" and small.mstep.select_by == "reward"
    assert small.tasks == paper.tasks  # one model on every public task, as the paper
    assert small.reasoning_from == "sample" and small.dtype == "auto"  # precision is the hardware's choice
    page = PRESETS["cpu-round"]  # the Train tab's round: continues its start, the real outputs mixed in
    assert (page.rounds, page.init, page.sft_mix, page.mstep.num_epochs) == (1, "previous", True, 1.0)
    assert page.mstep.loss == paper.mstep.loss and not small.sft_mix  # only the page round departs


def test_run_writes_every_round_and_resume_redoes_nothing(tiny_config, tmp_path, monkeypatch):
    rounds_seen = []
    results = run_em(tiny_config, tmp_path / "run", RunControl(on_round=lambda t, m: rounds_seen.append(t)))
    assert sorted(results) == rounds_seen == [0, 1, 2]
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["samples_per_input"] == 2 and manifest["versions"]["torch"] == torch.__version__
    for t in (1, 2):
        samples = [json.loads(line) for line in (run / f"round-{t}" / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 6 * 2  # 2 users x 3 requests, m = 2
        assert {"sample_id", "prompt", "retrieved_ids", "reasoning", "answer", "reward", "model_version"} <= set(
            samples[0]
        )
        selection = json.loads((run / f"round-{t}" / "selection.json").read_text())
        assert 0 < selection["kept"] <= selection["samples"] == 12
        assert set(results[t]["summary"]) >= {"judge", "rouge1", "rougeL", "meteor"}
    timings = json.loads((run / "timings.json").read_text())
    memory = json.loads((run / "peak_memory.json").read_text())
    assert set(memory) == set(timings) >= {"stage2_sft", "round1_estep", "round1_mstep", "round2_mstep"}
    assert all(50 < step["resident"] < 20_000 for step in memory.values())  # MiB: a torch process, not bytes

    import restpg.training.em as em

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(em, "train_model", must_not_run)
    monkeypatch.setattr(em, "predict", must_not_run)
    assert run_em(tiny_config, run) == results


def _weights(adapter_dir):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_kill_mid_estep_and_mid_mstep_then_resume_gives_the_same_result(tiny_config, tmp_path):
    reference = run_em(tiny_config, tmp_path / "reference")

    class Killed(Exception):
        pass

    def kill_at(stage_prefix, at):
        def on_progress(stage, done, total):
            if stage.startswith(stage_prefix) and done == at:
                raise Killed(stage)

        return on_progress

    run = tmp_path / "run"
    with pytest.raises(Killed):  # after the first E-step batch of round 1
        run_em(tiny_config, run, RunControl(on_progress=kill_at("round-1: E-step", 1)))
    assert not (run / "round-1" / "estep.done").exists() and (run / "round-1" / "samples.jsonl").exists()
    with pytest.raises(Killed):  # in the middle of round 1's M-step, after its checkpoint at step 2
        run_em(tiny_config, run, RunControl(on_progress=kill_at("round-1: M-step", 3)))
    assert (run / "round-1" / "checkpoints").exists() and not (run / "round-1" / "adapter").exists()
    resumed = run_em(tiny_config, run)
    for t in (1, 2):
        a = (tmp_path / "reference" / f"round-{t}" / "samples.jsonl").read_text()
        b = (run / f"round-{t}" / "samples.jsonl").read_text()
        assert sorted(a.splitlines()) == sorted(b.splitlines())
        ref_w, run_w = (
            _weights(tmp_path / "reference" / f"round-{t}" / "adapter"),
            _weights(run / f"round-{t}" / "adapter"),
        )
        assert all(torch.allclose(ref_w[k], run_w[k], atol=1e-6) for k in ref_w)
    assert resumed[2]["summary"] == pytest.approx(reference[2]["summary"])


def test_cancel_keeps_finished_rounds(tiny_config, tmp_path):
    control = RunControl()

    def cancel_in_round_2(stage, done, total):
        if stage.startswith("round-2: E-step"):
            control.cancel.set()

    control.on_progress = cancel_in_round_2
    with pytest.raises(Cancelled):
        run_em(tiny_config, tmp_path / "run", control)
    assert (tmp_path / "run" / "round-1" / "metrics.json").exists()
    assert not (tmp_path / "run" / "round-2" / "adapter").exists()
    assert sorted(run_em(tiny_config, tmp_path / "run")) == [0, 1, 2]


def test_bad_runs_fail_clearly(tiny_config, tmp_path):
    run_em(dataclasses.replace(tiny_config, rounds=0), tmp_path / "run")
    with pytest.raises(RunError, match="another config \\(differs in: samples_per_input\\)"):
        run_em(dataclasses.replace(tiny_config, rounds=0, samples_per_input=3), tmp_path / "run")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{cut")
    with pytest.raises(RunError, match="corrupt manifest"):
        run_em(tiny_config, tmp_path / "broken")
    strict = dataclasses.replace(tiny_config, tau=1.0)  # a random tiny judge never gives 10
    with pytest.raises(RunError, match="round 1: no sample passed the threshold.*Rounds before 1 are intact"):
        run_em(strict, tmp_path / "strict")
    assert (tmp_path / "strict" / "sft" / "metrics.json").exists()
    with pytest.raises(RunError, match="unknown reward 'bleu'"):
        EMConfig(reward="bleu")


def test_disk_full_while_saving_an_adapter_leaves_earlier_results(tiny_config, tmp_path, monkeypatch):
    import errno

    from peft import PeftModel

    config = dataclasses.replace(tiny_config, rounds=1)
    real_save = PeftModel.save_pretrained

    def full_disk(self, save_directory, *args, **kwargs):
        if "round-1" in str(save_directory) and "adapter-staging" in str(save_directory):
            raise OSError(errno.ENOSPC, "No space left on device")  # the round-1 adapter's final save
        return real_save(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(PeftModel, "save_pretrained", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        run_em(config, tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "sft" / "adapter" / "adapter_config.json").exists() and (run / "sft" / "metrics.json").exists()
    assert not (run / "round-1" / "adapter").exists() and (run / "round-1" / "estep.done").exists()
    monkeypatch.setattr(PeftModel, "save_pretrained", real_save)
    assert sorted(run_em(config, run)) == [0, 1]  # space freed: the run finishes from the M-step


def test_truncated_samples_are_not_kept_unless_asked():
    rows = [dict(sample("x", 1.0), truncated=True), dict(sample("x", 1.0), truncated=False)]
    config = EMConfig(reward="judge")
    assert len(select_samples(rows, config)) == 1
    assert len(select_samples(rows, dataclasses.replace(config, keep_truncated=True))) == 2


def test_a_run_reads_reasoning_from_a_file(tiny_config, tmp_path):
    """Stage 1 from a file of precomputed paths; the manifest names who wrote them; no teacher runs."""
    from restpg.training.em import load_split

    config = dataclasses.replace(tiny_config, rounds=0)
    paths = tmp_path / "paths.jsonl"
    paths.write_text(
        "".join(
            json.dumps(
                {"record_id": r.record_id, "reasoning": "- likes short sentences", "teacher": "gemma-7b-it (elsewhere)"}
            )
            + "\n"
            for r in load_split(config, "train", config.train_users)
        )
    )
    run_em(dataclasses.replace(config, reasoning=True, reasoning_from=str(paths)), tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["models"]["teacher"] == "gemma-7b-it (elsewhere) (file paths.jsonl)"
    assert not (tmp_path / "run" / "reasoning.jsonl").exists()  # no teacher ran
    paths.write_text("")
    with pytest.raises(RunError, match="no reasoning path for 6 of 6 training records"):
        run_em(dataclasses.replace(config, reasoning=True, reasoning_from=str(paths)), tmp_path / "other")


def test_a_run_starts_its_rounds_from_another_runs_sft(tiny_config, tmp_path):
    """sft_adapter (the Train tab's "start from the shipped SFT"): stages 1 and 2 are skipped."""
    run_em(dataclasses.replace(tiny_config, rounds=0), tmp_path / "first")
    sft = tmp_path / "first" / "sft" / "adapter"
    second = dataclasses.replace(tiny_config, rounds=1, sft_adapter=str(sft))
    stages = []
    results = run_em(second, tmp_path / "second", RunControl(on_progress=lambda s, d, t: stages.append(s)))
    assert sorted(results) == [0, 1] and not any(s.startswith(("stage 1", "stage 2")) for s in stages)
    assert results[0] == json.loads((tmp_path / "first" / "sft" / "metrics.json").read_text())  # reused, not redone
    samples = [
        json.loads(line) for line in (tmp_path / "second" / "round-1" / "samples.jsonl").read_text().splitlines()
    ]
    assert {s["model_version"] for s in samples} == {"sft"}
    with pytest.raises(RunError, match="trained with k = 5"):
        run_em(dataclasses.replace(second, k=3), tmp_path / "third")


def test_a_finished_run_goes_on_with_more_rounds(tiny_config, tmp_path):
    run_em(dataclasses.replace(tiny_config, rounds=1), tmp_path / "run")
    first = (tmp_path / "run" / "round-1" / "metrics.json").read_text()
    results = run_em(dataclasses.replace(tiny_config, rounds=2), tmp_path / "run")
    assert sorted(results) == [0, 1, 2] and (tmp_path / "run" / "round-1" / "metrics.json").read_text() == first
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]["rounds"] == 2  # ship reads it
    with pytest.raises(RunError, match="differs in: samples_per_input"):
        run_em(dataclasses.replace(tiny_config, rounds=2, samples_per_input=3), tmp_path / "run")


def test_clipped_reasoning_keeps_its_bullets_on_their_own_lines():
    from restpg.training.em import clip_reasoning

    bullets = "- Background: a nurse. Works nights.\n- Style: short lines, one flaw.\n- For this request: noise."
    assert clip_reasoning(bullets, 60) == bullets and clip_reasoning(bullets, None) == bullets
    assert clip_reasoning(bullets, 12) == "- Background: a nurse. Works nights.\n- Style: short lines, one flaw."
    assert clip_reasoning(bullets, 4) == "- Background: a nurse."
    assert clip_reasoning("one two three four five", 3) == "one two three"


def test_training_and_sampling_read_the_same_prompt_within_the_budget(tiny_config, tiny_model, tmp_path):
    """One rule for an over-long prompt: SFT, the E-step and evaluation drop the same
    lowest-ranked profile items to fit the run's budget; the header and the request stay."""
    from restpg.inference.models import prompt_token_counter
    from restpg.jsonl import read_jsonl
    from restpg.training.em import _sft_examples, load_split

    budget = 320  # 3 of the 5 items fit (about 100 tokens each at 8 words per field)
    small = dataclasses.replace(TINY_TRAIN, max_input_tokens=budget)
    config = dataclasses.replace(tiny_config, sft=small, mstep=small, rounds=1)
    assert config.max_input_tokens == budget
    run_em(config, tmp_path / "run")
    count = prompt_token_counter(tiny_model.tokenizer)
    train = load_split(config, "train", config.train_users)
    sft_prompts = {e.example_id: e.prompt for e in _sft_examples(config, train, None, count)}
    samples = read_jsonl(tmp_path / "run" / "round-1" / "samples.jsonl")
    assert samples and all(s["prompt"] == sft_prompts[s["record_id"]] for s in samples)
    assert all(count(p) <= budget for p in sft_prompts.values())
    assert any(len(s["retrieved_ids"]) < config.k for s in samples)  # the budget did bite
    by_id = {r.record_id: r for r in train}
    assert all(f"instruction: {by_id[s['record_id']].input}" in s["prompt"] for s in samples)


@pytest.mark.parametrize("device", DEVICES)
def test_the_rest_pg_path_end_to_end(format_model_dir, tmp_path, monkeypatch, device):
    """Stage 1 (from a file) -> SFT with reasoning -> E-step -> selection -> M-step on
    ``reasoning_target``: the M-step trains on the kept samples' own reasoning and answer,
    each weighted by its reward."""
    import restpg.training.em as em
    from helpers import FORMAT_REASONING, format_config, write_reasoning_file
    from restpg.data.prompts import reasoning_target
    from restpg.jsonl import read_jsonl

    config = dataclasses.replace(format_config(format_model_dir), device=device)
    train = em.load_split(config, "train", config.train_users)
    paths = write_reasoning_file(tmp_path / "paths.jsonl", train, FORMAT_REASONING, "tests")
    config = dataclasses.replace(config, reasoning_from=str(paths))
    trained = []
    train_model = em.train_model

    def spy(model_config, examples, train_config, output_dir, **kwargs):
        import gc

        from restpg.inference.models import LoadedModel

        trained.append((output_dir.name, list(examples)))
        gc.collect()  # no generator or judge of this run is held while it trains
        assert not [o for o in gc.get_objects() if isinstance(o, LoadedModel) and o.name == config.model]
        return train_model(model_config, examples, train_config, output_dir, **kwargs)

    monkeypatch.setattr(em, "train_model", spy)
    results = run_em(config, tmp_path / "run")
    assert [name for name, _ in trained] == ["sft", "round-1"]
    sft = trained[0][1]
    assert [(e.example_id, e.completion, e.weight) for e in sft] == [
        (r.record_id, reasoning_target(FORMAT_REASONING, r.output), 1.0) for r in train
    ]
    samples = read_jsonl(tmp_path / "run" / "round-1" / "samples.jsonl")
    assert len(samples) == len(train) * config.samples_per_input
    kept = select_samples(samples, config)
    assert kept, "the format model's samples hold reasoning and an answer"
    mstep = trained[1][1]
    assert [(e.example_id, e.prompt, e.completion, e.weight) for e in mstep] == [
        (s["sample_id"], s["prompt"], reasoning_target(s["reasoning"], s["answer"]), s["reward"]) for s in kept
    ]
    for example, sample in zip(mstep, kept):
        assert sample["reasoning"].strip() and sample["answer"].strip()
        assert example.completion.index(sample["reasoning"]) < example.completion.index(sample["answer"])
    assert all(0 < e.weight < 1 for e in mstep)  # ROUGE-L rewards as weights, not SFT's 1
    assert results[1]["selection"]["kept"] == len(kept) and results[1]["selection"]["samples"] == len(samples)


def test_an_m_step_with_sft_mix_also_trains_on_the_real_outputs(format_model_dir, tmp_path, monkeypatch):
    """sft_mix (ours): the M-step's examples are the kept samples, then every SFT example (weight 1),
    also when the rounds start from another run's SFT adapter."""
    import restpg.training.em as em
    from helpers import FORMAT_REASONING, format_config, write_reasoning_file
    from restpg.data.prompts import reasoning_target

    config = format_config(format_model_dir)
    train = em.load_split(config, "train", config.train_users)
    paths = write_reasoning_file(tmp_path / "paths.jsonl", train, FORMAT_REASONING, "tests")
    config = dataclasses.replace(config, reasoning_from=str(paths), rounds=0)
    run_em(config, tmp_path / "sft-run")
    trained = []
    train_model = em.train_model

    def spy(model_config, examples, train_config, output_dir, **kwargs):
        trained.append(list(examples))
        return train_model(model_config, examples, train_config, output_dir, **kwargs)

    monkeypatch.setattr(em, "train_model", spy)
    mixed = dataclasses.replace(
        config, rounds=1, sft_mix=True, init="previous", sft_adapter=str(tmp_path / "sft-run" / "sft" / "adapter")
    )
    run_em(mixed, tmp_path / "run")
    (mstep,) = trained
    kept = select_samples(em.read_jsonl(tmp_path / "run" / "round-1" / "samples.jsonl"), mixed)
    assert [e.example_id for e in mstep[: len(kept)]] == [s["sample_id"] for s in kept]
    assert [(e.example_id, e.completion, e.weight) for e in mstep[len(kept) :]] == [
        (r.record_id, reasoning_target(FORMAT_REASONING, r.output), 1.0) for r in train
    ]


def test_sft_examples_hold_the_clipped_reasoning_then_the_real_text(tiny_model):
    from restpg.data.prompts import OPENING, TRANSITION
    from restpg.inference.models import prompt_token_counter
    from restpg.training.em import _sft_examples, load_split
    from restpg.training.reasoning import ReasoningPath

    config = EMConfig(tasks=("product_review",), train_users=1, max_item_words=8, reasoning_max_words=5)
    records = load_split(config, "train", 1)
    count = prompt_token_counter(tiny_model.tokenizer)
    paths = {
        r.record_id: ReasoningPath(
            r.record_id, "t", "- Likes short lines. Writes for parents.\n- Style: plain.", 0, False
        )
        for r in records
    }
    paths[records[0].record_id] = ReasoningPath(records[0].record_id, "t", "", 2, False)  # all lines were copies
    examples = _sft_examples(config, records, paths, count)
    assert [e.example_id for e in examples] == [r.record_id for r in records[1:]]  # no usable reasoning: left out
    assert examples[0].completion == f"{OPENING}\n- Likes short lines.\n{TRANSITION}\n{records[1].output}"
    assert "summarize the user's writing style" in examples[0].prompt and records[1].output not in examples[0].prompt
    plain = _sft_examples(dataclasses.replace(config, reasoning=False), records, None, count)
    assert [e.completion for e in plain] == [r.output for r in records] and "summarize" not in plain[0].prompt
    with pytest.raises(RunError, match="stage 1 produced no usable reasoning"):
        _sft_examples(config, records[:1], paths, count)


def test_training_curves_and_estep_statistics_go_to_tensorboard(tiny_config, tmp_path):
    """--report-to tensorboard: the Trainer's losses per step and each round's E-step
    statistics, read back from the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    run_em(dataclasses.replace(tiny_config, rounds=1, report_to="tensorboard"), run)

    def events(step):
        accumulator = EventAccumulator(str(run / "logs" / step), size_guidance={"scalars": 0, "histograms": 0})
        accumulator.Reload()
        return accumulator

    for step in ("sft", "round-1"):
        losses = events(step).Scalars("train/loss")
        assert len(losses) == TINY_TRAIN.max_steps and all(e.value > 0 for e in losses)
    selection = json.loads((run / "round-1" / "selection.json").read_text())
    estep = events("estep")
    assert [(e.step, e.value) for e in estep.Scalars("estep/kept")] == [(1, selection["kept"])]
    assert estep.Scalars("estep/samples")[0].value == selection["samples"]
    assert estep.Scalars("estep/reward_mean")[0].value == pytest.approx(selection["reward_mean"])
    assert estep.Histograms("estep/reward")[0].histogram_value.num == selection["samples"]
    with pytest.raises(RunError, match="unknown tracker 'tensorbored'"):
        dataclasses.replace(tiny_config, report_to="tensorbored")


def test_a_run_keeps_the_best_validated_checkpoint_of_each_stage(tiny_config, tmp_path):
    """Through the pipeline: SFT selected on validation loss, the M-step on the reward of answers
    generated for a fixed validation sample (the paper's rule)."""
    config = dataclasses.replace(
        tiny_config,
        rounds=1,
        sft=dataclasses.replace(TINY_TRAIN, select_by="loss", save_steps=2),
        mstep=dataclasses.replace(TINY_TRAIN, select_by="reward", save_steps=2, validation_examples=2),
    )
    run_em(config, tmp_path / "run")
    sft = json.loads((tmp_path / "run" / "sft" / "checkpoint_selection.json").read_text())
    assert sft["select_by"] == "loss" and [v["step"] for v in sft["validated"]] == [2, 4]
    assert sft["selected_step"] == min(sft["validated"], key=lambda v: v["eval_loss"])["step"]
    mstep = json.loads((tmp_path / "run" / "round-1" / "checkpoint_selection.json").read_text())
    assert mstep["select_by"] == "reward" and all(0 <= v["eval_reward"] <= 1 for v in mstep["validated"])
    from restpg.training.em import load_split, validation_records

    held_out = load_split(config, config.eval_split, config.eval_users)
    assert validation_records(config, held_out, 2) == validation_records(config, held_out, 2)  # fixed sample
    assert len(validation_records(config, held_out, 2)) == 2 and validation_records(config, held_out, 99) == held_out


def test_validation_loss_needs_reasoning_for_the_validation_records(tiny_config, tmp_path):
    from restpg.training.em import load_split

    train = load_split(tiny_config, "train", tiny_config.train_users)
    paths = tmp_path / "paths.jsonl"  # covers the training records only
    paths.write_text(
        "".join(json.dumps({"record_id": r.record_id, "reasoning": "- short", "teacher": "t"}) + "\n" for r in train)
    )
    config = dataclasses.replace(
        tiny_config,
        rounds=0,
        reasoning=True,
        reasoning_from=str(paths),
        sft=dataclasses.replace(TINY_TRAIN, select_by="loss"),
    )
    with pytest.raises(RunError, match="none of the .* validation records has a reasoning path.*--select-by reward"):
        run_em(config, tmp_path / "run")


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_with_full_fine_tuning_samples_from_and_evaluates_its_whole_models(tiny_config, tmp_path, device):
    """The paper's way (every weight trains), with the judge's reward: on the CPU and on CUDA."""
    full = dataclasses.replace(TINY_TRAIN, finetuning="full")
    config = dataclasses.replace(tiny_config, rounds=1, sft=full, mstep=full, device=device)
    results = run_em(config, tmp_path / "run")
    for step in ("sft", "round-1"):
        assert (tmp_path / "run" / step / "adapter" / "config.json").exists()
        assert not (tmp_path / "run" / step / "adapter" / "adapter_config.json").exists()
    assert sorted(results) == [0, 1] and "rougeL" in results[1]["summary"]
    assert PRESETS["paper"].sft.finetuning == PRESETS["paper"].mstep.finetuning == "full"
    assert PRESETS["paper"].sft.rate == 5e-6 and PRESETS["cpu-small"].sft.finetuning == "lora"


def test_a_run_samples_from_merged_adapters_and_reloads_only_for_another(tiny_config, tmp_path, monkeypatch):
    """Models.generator: an adapter merged into the base (restpg.inference.models.load_merged), kept while the
    same adapter is asked for, loaded again for another one or for the base."""
    import restpg.training.em as em
    from helpers import make_adapter
    from restpg.inference.models import load_merged

    loads = []
    monkeypatch.setattr(
        em, "load_merged", lambda config, adapter: loads.append(adapter) or load_merged(config, adapter)
    )

    models = em.Models(tiny_config)
    first = make_adapter(tiny_config.model, tmp_path / "a" / "adapter", seed=1)
    second = make_adapter(tiny_config.model, tmp_path / "b" / "adapter", seed=2)
    one = models.generator(first)
    assert models.generator(first) is one and one.merged_adapter == first and loads == [first]
    assert models.generator(second).merged_adapter == second and loads == [first, second]
    assert models.generator(None).merged_adapter is None and not models.generator(None).adapters


def test_stage_one_loads_no_teacher_when_every_path_is_cached(tiny_config, tmp_path, monkeypatch):
    import restpg.training.em as em

    config = dataclasses.replace(tiny_config, reasoning=True, reasoning_from="teacher", reasoning_max_tokens=4)
    records = em.load_split(config, "train", config.train_users)
    first = em.stage1_reasoning(em.Models(config), config, records, tmp_path, RunControl(), "stage 1")

    def no_model(self, adapter):
        raise AssertionError("the teacher was loaded again")

    monkeypatch.setattr(em.Models, "generator", no_model)
    assert em.stage1_reasoning(em.Models(config), config, records, tmp_path, RunControl(), "stage 1") == first
