import pytest
import torch

from helpers import DEVICES, sliding_window_model
from restpg.evaluation.reward import JUDGE_LEVELS, LLMJudge
from restpg.inference.shared_prefix import Root, common_prefix_length, last_logits, root_of, shares_prefixes


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [3]]) == 0
    assert common_prefix_length([[7, 8]]) == 2 and common_prefix_length([]) == 0


def _alone(model, row, keep):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([row], device=model.device), logits_to_keep=keep).logits[0]


@pytest.mark.parametrize(
    "labels",
    [
        ["a", "a", "a", "b", "c", "c"],  # the E-step's shape: one request's answers together
        ["a", "b", "c", "d", "e", "f"],  # the evaluation's: every request alone
        ["a"] * 6,
    ],
)
@pytest.mark.parametrize("device", DEVICES)
def test_rows_read_as_if_each_ran_alone(tiny_model_on, labels, device):
    """Rows of different lengths, sharing a root and, within a group, more: every row's logits at its
    last positions equal those of the row run alone, without padding or copied keys."""
    root_part = list(range(100, 130))
    request = {label: list(range(200 + 10 * n, 200 + 10 * n + 9 + n)) for n, label in enumerate("abcdef")}
    rows = [root_part + request[label] + list(range(300 + n, 303 + 2 * n)) for n, label in enumerate(labels)]
    rows[1] = rows[1] + [5, 6, 7, 8, 9]  # one long answer
    tiny_model = tiny_model_on(device)
    model, keep, pad = tiny_model.model, 3, tiny_model.tokenizer.pad_token_id
    with torch.inference_mode():
        root = root_of(model, rows, keep, torch.device(device))
        assert root.tokens[: len(root_part)] == root_part  # all of it, and more where every row shares more
        shared = last_logits(model, rows, labels, keep, pad, root, torch.device(device))
        whole = last_logits(model, rows, labels, keep, pad, Root([], []), device)
    for n, row in enumerate(rows):
        assert shared[n].device.type == device
        assert torch.allclose(shared[n], _alone(model, row, keep), atol=1e-5)
        assert torch.allclose(whole[n], _alone(model, row, keep), atol=1e-5)


def test_the_root_leaves_every_row_its_read_positions(tiny_model):
    rows = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]
    with torch.inference_mode():
        assert root_of(tiny_model.model, rows, keep=3, device="cpu").tokens == [1]


def test_the_judge_shares_prefixes_on_a_cpu_by_default(tiny_model):
    assert LLMJudge(tiny_model).share_prefixes and not LLMJudge(tiny_model, share_prefixes=False).share_prefixes


def test_sliding_window_models_run_rows_whole():
    model = sliding_window_model()
    assert not shares_prefixes(model)
    with torch.inference_mode():
        assert root_of(model, [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]], keep=2, device="cpu").tokens == []


@pytest.mark.parametrize("device", DEVICES)
def test_judge_scores_the_same_with_and_without_shared_prefixes(tiny_model_on, device):
    """The judge's E-step shape (a request's answers together) and independent pairs, mixed, in
    batches that split a group: the same distributions as running every prompt whole."""
    instructions = ["write a review of the tent"] * 3 + ["an abstract about soil"] * 2 + ["a topic post"]
    references = ["great tent, kept us dry"] * 3 + ["we measure soil carbon"] * 2 + ["on gardening"]
    answers = ["dry tent", "a wet and cold tent, sadly", "ok", "soil carbon, measured", "birds", "plants"]
    tiny_model = tiny_model_on(device)
    shared = LLMJudge(tiny_model, batch_size=4, share_prefixes=True).score(instructions, references, answers)
    whole = LLMJudge(tiny_model, batch_size=4, share_prefixes=False).score(instructions, references, answers)
    for s, w in zip(shared, whole):
        for level in JUDGE_LEVELS:
            assert s.probabilities[level] == pytest.approx(w.probabilities[level], abs=1e-4)
