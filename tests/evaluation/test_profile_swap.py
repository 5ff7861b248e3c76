"""The paper's personalization check: a record answered with another user's profile items."""

import pytest

from helpers import review_record
from restpg.evaluation.profile_swap import donor_of, swap_profiles


def _records():
    alice = review_record(user="alice")
    bob = review_record(
        user="bob",
        profile=[
            {"overall": 1.0, "summary": "Bad kettle", "description": "A kettle.", "reviewText": "It leaks."},
            {"overall": 2.0, "summary": "Loud fan", "description": "A fan.", "reviewText": "Too loud at night."},
        ],
    )
    return [alice, bob]


def test_each_user_takes_the_next_users_profile_items_in_the_share_asked():
    alice, bob = _records()
    assert donor_of([alice, bob]) == {"alice": "bob", "bob": "alice"}
    assert swap_profiles([alice, bob], 0.0) == [alice, bob]
    whole = swap_profiles([alice, bob], 1.0)
    assert whole[0].profile[: len(bob.profile)] == bob.profile and whole[0].record_id == alice.record_id
    assert whole[0].output == alice.output and whole[0].input == alice.input
    half = swap_profiles([alice, bob], 0.5)
    assert half[0].profile[:2] == bob.profile[:2] and half[0].profile[2:] == alice.profile[2:]
    assert half[1].profile == alice.profile[:1] + bob.profile[1:]


def test_a_swap_needs_two_users_and_a_share_between_0_and_1():
    alice, _ = _records()
    with pytest.raises(ValueError, match="two users or more"):
        swap_profiles([alice], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        swap_profiles(_records(), 1.5)
