import pytest

from restpg.data.longlamp import load_records, sample_path
from restpg.evaluation.reward import JUDGE_LEVELS, LexicalRewardModel, LLMJudge, _LevelTokens, judge_prompt


def test_level_tokens_handle_multi_token_levels(tiny_model):
    levels = _LevelTokens(tiny_model.tokenizer, JUDGE_LEVELS)
    assert levels.tokens[10] == levels.tokens[1] + (levels.tokens[10][1],)  # "10" = "1" + "0" here
    assert levels.leaves == [3, 5, 7, 10]  # "1" is read inside "10"
    assert levels.rows == [10]  # one forward pass per prompt reads all five levels


def test_judge_scores_are_distributions_and_levels(tiny_model):
    judge = LLMJudge(tiny_model, batch_size=2)
    scores = judge.score(["write a review"] * 3, ["great tent", "bad tent", "ok"], ["great tent", "x", "ok ok"])
    for s in scores:
        assert set(s.probabilities) == set(JUDGE_LEVELS)
        assert sum(s.probabilities.values()) == pytest.approx(1.0)
        assert s.level == max(s.probabilities, key=s.probabilities.get) and s.reward == s.level / 10


def test_batched_scores_equal_one_by_one(tiny_model):
    pairs = [("a", "short", "short"), ("a much longer instruction " * 4, "ref text", "other answer text")]
    together = LLMJudge(tiny_model, batch_size=2).score(*zip(*pairs))
    alone = [LLMJudge(tiny_model, batch_size=1).score([i], [r], [a])[0] for i, r, a in pairs]
    for t, a in zip(together, alone):
        for level in JUDGE_LEVELS:
            assert t.probabilities[level] == pytest.approx(a.probabilities[level], abs=1e-4)


def test_judge_cache_in_memory_and_on_disk(tiny_model, tmp_path, monkeypatch):
    cache = tmp_path / "judge.jsonl"
    judge = LLMJudge(tiny_model, cache_file=cache)
    first = judge.score(["i"], ["r"], ["a"])
    calls = []
    monkeypatch.setattr(LLMJudge, "_score_prompts", lambda self, prompts: calls.append(prompts) or [])
    assert judge.score(["i"], ["r"], ["a"]) == first and not calls
    cache.write_text(cache.read_text() + '{"key": "cut by a cra')  # a torn last line is ignored
    assert LLMJudge(tiny_model, cache_file=cache).score(["i"], ["r"], ["a"]) == first and not calls


def test_judge_prompt_has_rubric_and_pair():
    prompt = judge_prompt("INSTR", "TRUTH", "ANSWER")
    assert "impartial judge" in prompt and all(f"{lv}:" in prompt for lv in JUDGE_LEVELS)
    assert "instruction: INSTR" in prompt and "ground truth: TRUTH" in prompt and "answer: ANSWER" in prompt


def test_lexical_reward_model(metrics):
    reward = LexicalRewardModel(metrics)
    assert reward.name == "lexical:1*rougeL"
    values = reward(["i", "i", "i"], ["the cat sat", "the cat sat", "the cat sat"], ["the cat sat", "dogs", "  "])
    assert values[0] == pytest.approx(1.0) and values[1] == 0.0 and values[2] == 0.0


def test_real_judge_ranks_a_copy_of_the_truth_above_unrelated_text(real_model):
    """The paper's judge with SmolLM2-135M-Instruct: a copy of the real text must beat unrelated text."""
    records = load_records(sample_path("product_review", "user", "test"), "product_review").records[:3]
    unrelated = (
        "The quarterly budget meeting moved to Thursday; bring the revised spreadsheets and "
        "the minutes from last week's board call."
    )
    judge = LLMJudge(real_model, batch_size=6)
    copies = judge.score([r.input for r in records], [r.output for r in records], [r.output for r in records])
    others = judge.score([r.input for r in records], [r.output for r in records], [unrelated] * 3)

    def expected(score):
        return sum(level * p for level, p in score.probabilities.items())

    for copy, other in zip(copies, others):
        assert expected(copy) > expected(other)
        assert copy.level >= other.level


def test_level_probabilities_equal_a_brute_force_computation(tiny_model):
    """Each level's probability from one forward pass equals scoring its tokens one by one."""
    import math

    import torch

    from restpg.inference.models import chat_text

    judge = LLMJudge(tiny_model)
    score = judge.score(["instr"], ["truth text"], ["an answer"])[0]
    tokenizer = tiny_model.tokenizer
    context = tokenizer(
        chat_text(tokenizer, judge_prompt("instr", "truth text", "an answer")), add_special_tokens=False
    )["input_ids"]

    def next_logprobs(ids):
        with torch.inference_mode():
            logits = tiny_model.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits, -1)

    raw = {}
    for level in JUDGE_LEVELS:
        ids = list(context)
        total = 0.0
        for token in tokenizer.encode(str(level), add_special_tokens=False):
            total += float(next_logprobs(ids)[token])
            ids.append(token)
        raw[level] = total
    one, zero = tokenizer.encode("1", add_special_tokens=False)[0], tokenizer.encode("10", add_special_tokens=False)[1]
    raw[1] += math.log(1 - math.exp(float(next_logprobs(list(context) + [one])[zero])))  # "1" ends there
    top = max(raw.values())
    total = sum(math.exp(v - top) for v in raw.values())
    for level in JUDGE_LEVELS:
        assert score.probabilities[level] == pytest.approx(math.exp(raw[level] - top) / total, rel=1e-4)


def test_a_prompt_over_the_judges_window_is_cut_and_counted(tiny_model, metrics):
    """A pair longer than the judge's window is still scored (its middle cut) and said to be cut,
    per record in the evaluation's rows; a short pair is not."""
    from types import SimpleNamespace

    from restpg.evaluation.evaluate import JUDGE_CUT, score_predictions

    judge = LLMJudge(tiny_model, max_input_tokens=400)
    long_answer = "words " * 600
    assert judge.cut(["i", "i"], ["r", "r"], ["short", long_answer]) == [False, True]
    assert all(0.0 <= value <= 1.0 for value in judge(["i"], ["r"], [long_answer]))
    records = [SimpleNamespace(input="i", output="a real text"), SimpleNamespace(input="i", output="a real text")]
    rows = score_predictions(records, ["short", long_answer], metrics, judge)
    assert [row[JUDGE_CUT] for row in rows] == [0.0, 1.0]
