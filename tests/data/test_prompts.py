from helpers import review_record
from restpg.data.prompts import (
    ITEM_SEPARATOR,
    OPENING,
    TRANSITION,
    PromptSettings,
    format_item,
    parse_output,
    personalized_prompt,
    plain_prompt,
    rag_prompt,
    reasoning_target,
    teacher_prompt,
)


def test_teacher_prompt_has_items_subject_and_expected_output():
    record = review_record()
    prompt = teacher_prompt(record.task, record.input, record.output, record.profile)
    assert record.input in prompt and record.output in prompt
    assert prompt.count(ITEM_SEPARATOR) == len(record.profile) - 1
    assert "bullet points" in prompt and "never copy it" in prompt
    assert prompt.rstrip().endswith("summary of the user's writing style and preferences:")


def test_generation_prompts():
    record = review_record()
    items = record.profile[:2]
    personalized = personalized_prompt(record.task, record.input, items)
    assert "First summarize the user's writing style" in personalized
    assert f"instruction: {record.input}" in personalized and personalized.endswith("answer:")
    assert "review: Smoothies every morning. The lid locks." in personalized
    rag = rag_prompt(record.task, record.input, items)
    assert "context:" in rag and "summarize" not in rag
    plain = plain_prompt(record.task, record.input)
    assert "context" not in plain and record.input in plain
    assert record.output not in personalized + rag + plain  # the real text never leaks


def test_item_words_are_clipped_when_asked():
    record = review_record()
    text = record.profile[0].fields["reviewText"]
    clipped = format_item(record.task, record.profile[0], PromptSettings(max_item_words=3))
    assert "review: My kids ... " + text.split()[-1] in clipped  # two thirds from the start, a third from the end
    assert format_item(record.task, record.profile[0], PromptSettings(max_item_words=2)).endswith("My kids ...")


def test_parse_round_trip():
    text = reasoning_target("- likes safety\n- short sentences", "Great tent. Safe.")
    parsed = parse_output(text)
    assert parsed.ok and parsed.reasoning == "- likes safety\n- short sentences"
    assert parsed.response == "Great tent. Safe." and not parsed.problems


def test_parse_tolerates_case_whitespace_and_missing_opening():
    text = "- terse\n  now,  CONSIDERING the style\nsummary, the final answer\nShort review."
    parsed = parse_output(text)
    assert parsed.found_transition and parsed.reasoning == "- terse" and parsed.response == "Short review."


def test_parse_loose_final_answer():
    parsed = parse_output(f"{OPENING}\n- loves dogs\nFinal answer: My dog approves.")
    assert parsed.reasoning == "- loves dogs" and parsed.response == "My dog approves."


def test_parse_truncated_without_transition():
    parsed = parse_output(f"{OPENING}\n- one\n- two, and then the model kept", truncated=True)
    assert parsed.response == "" and parsed.reasoning.startswith("- one")
    assert not parsed.ok and "cut at the token limit" in parsed.problems[0]


def test_parse_no_reasoning_at_all():
    parsed = parse_output("Just a review, no reasoning.")
    assert parsed.response == "Just a review, no reasoning." and parsed.reasoning == ""
    assert "no transition phrase" in parsed.problems[0]


def test_parse_empty_parts_and_empty_text():
    parsed = parse_output(f"{OPENING}\n{TRANSITION}\n", truncated=True)
    assert parsed.found_transition and not parsed.ok
    assert "empty reasoning" in parsed.problems and any("empty response" in p for p in parsed.problems)
    empty = parse_output("")
    assert empty.reasoning == "" and empty.response == ""


def _words(text):
    return len(text.split())


def test_a_prompt_over_its_budget_loses_its_lowest_ranked_items_never_the_request():
    import pytest

    from restpg.data.prompts import PromptTooLongError, fitted_prompt

    record = review_record()
    items = record.profile
    whole = fitted_prompt("reasoning", record.task, record.input, items, PromptSettings(), _words, None)
    assert whole.items == tuple(items) and not whole.changed
    for budget in (_words(whole.prompt), _words(whole.prompt) - 1):
        fitted = fitted_prompt("reasoning", record.task, record.input, items, PromptSettings(), _words, budget)
        assert _words(fitted.prompt) <= budget and fitted.items == tuple(items[: len(fitted.items)])
        assert record.input in fitted.prompt and fitted.prompt.startswith(whole.prompt[:200].split("context:")[0])
    fitted = fitted_prompt(
        "reasoning", record.task, record.input, items, PromptSettings(), _words, _words(whole.prompt) - 1
    )
    assert fitted.dropped == 1 and "Sharp edges" not in fitted.prompt  # the third (lowest-ranked) item went
    bare = fitted_prompt("reasoning", record.task, record.input, [], PromptSettings(), _words, None).prompt
    one = fitted_prompt("reasoning", record.task, record.input, items[:1], PromptSettings(), _words, None).prompt
    squeezed = fitted_prompt(
        "reasoning", record.task, record.input, items, PromptSettings(), _words, _words(one) - 3
    )  # the best item alone is too long: it is shortened
    assert (
        squeezed.items == (items[0],) and squeezed.item_words is not None and _words(squeezed.prompt) <= _words(one) - 3
    )
    none = fitted_prompt("reasoning", record.task, record.input, items, PromptSettings(), _words, _words(bare))
    assert none.items == () and none.dropped == 3 and none.prompt == bare
    with pytest.raises(PromptTooLongError, match=f"record X: {_words(bare)} tokens without any profile item"):
        fitted_prompt(
            "reasoning", record.task, record.input, items, PromptSettings(), _words, _words(bare) - 1, name="record X"
        )
