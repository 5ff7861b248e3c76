import pytest

from helpers import review_record
from restpg.data.longlamp import ProfileItem, Record
from restpg.data.retrieval import item_text, retrieve, tokenize


def test_most_relevant_item_ranks_first():
    record = review_record(request="Review of a plastic toy for toddlers: is it safe, any sharp edges?")
    ranked = retrieve(record, k=2)
    assert [r.position for r in ranked][0] == 2  # the "sharp edges ... toddler" review
    assert ranked[0].score >= ranked[1].score
    assert ranked[0].item is record.profile[2]


def test_k_larger_than_profile_returns_all_ranked():
    record = review_record()
    ranked = retrieve(record, k=10)
    assert sorted(r.position for r in ranked) == [0, 1, 2]


def test_ties_keep_profile_order_and_are_deterministic():
    record = review_record(request="zzz unrelated words qqq")
    assert [r.position for r in retrieve(record, k=3)] == [0, 1, 2]
    assert retrieve(record, k=3) == retrieve(record, k=3)


def test_bad_k():
    with pytest.raises(ValueError, match="k must be at least 1"):
        retrieve(review_record(), k=0)


def test_items_with_empty_text_do_not_crash():
    empty = ProfileItem("0", {"overall": None, "summary": "", "description": "", "reviewText": ""})
    record = Record("r", "product_review", "u", "a request", "out", (empty, empty))
    assert [r.position for r in retrieve(record, k=5)] == [0, 1]


def test_item_text_and_tokenize():
    record = review_record()
    assert item_text("product_review", record.profile[0]).startswith("5.0 Safe train Wooden toy train set.")
    assert tokenize("Don't STOP, café!") == ["don", "t", "stop", "café"]
