import pytest

from helpers import review_record
from restpg.data.support import (
    SupportConfig,
    SupportReport,
    format_report,
    report_for_record,
    split_sentences,
    support_report,
)
from restpg.errors import InputError, RestpgError

ITEMS = [
    ("0", "Nice shoes, the fit is right."),
    ("1", "A blender that makes smoothies every morning."),
    ("3", "Great comfort and a perfect fit, I wear these shoes all day."),
]
REFERENCE = "I bought these boots for hiking and they kept my feet dry through three days of heavy rain on the trail."


# --- split_sentences ---------------------------------------------------------------------------


def test_split_bullets_of_all_kinds():
    text = "- The user praises comfort.\n* They dislike synthetic leather.\n1. Reviews are short.\n2) Tone is warm.\n\u2022 Last one"
    assert split_sentences(text) == [
        "The user praises comfort.",
        "They dislike synthetic leather.",
        "Reviews are short.",
        "Tone is warm.",
        "Last one",
    ]


def test_split_bullets_run_together_on_one_line():
    assert split_sentences("- The user likes fit. - They hate rain. 3. Short reviews.") == [
        "The user likes fit.",
        "They hate rain.",
        "Short reviews.",
    ]


def test_split_prose_keeps_numbers_abbreviations_and_words():
    text = "The user rates most items 4.5 stars! Does the user care about price? Yes, e.g. cheap toys.  Done"
    assert split_sentences(text) == [
        "The user rates most items 4.5 stars!",
        "Does the user care about price?",
        "Yes, e.g. cheap toys.",
        "Done",
    ]


def test_split_drops_empty_pieces_and_separators():
    assert split_sentences("") == []
    assert split_sentences("  \n-\n---\n\n- Real sentence.\n") == ["Real sentence."]


def test_split_bullet_with_nested_prose_splits_sentences_inside():
    assert split_sentences("- First claim. Second claim.\n- Third") == ["First claim.", "Second claim.", "Third"]


# --- support -----------------------------------------------------------------------------------


def test_supported_sentence_linked_to_right_items_best_first():
    report = support_report("- The user praises comfort and fit.", ITEMS, REFERENCE)
    (sentence,) = report.sentences
    assert sentence.supported
    # content words: praises, comfort, fit ("user" and stopwords dropped)
    assert [i.item_id for i in sentence.items] == ["3"]  # item 0 shares only "fit"
    assert sentence.items[0].shared == ("comfort", "fit")
    assert sentence.items[0].score == pytest.approx(2 / 3)


def test_score_is_shared_over_sentence_content_words_and_ranks_items():
    items = [("a", "shoes fit"), ("b", "shoes fit comfort"), ("c", "nothing relevant")]
    report = support_report("Shoes fit with comfort, durability, style.", items, "")
    s = report.sentences[0]
    assert [(i.item_id, i.score) for i in s.items] == [("b", pytest.approx(3 / 5)), ("a", pytest.approx(2 / 5))]
    assert s.items[0].shared == ("shoes", "fit", "comfort")


def test_stemming_matches_word_forms_and_shows_sentence_form():
    report = support_report("The user praised the fitting shoes.", [("9", "she praises shoe fit")], "")
    assert report.sentences[0].items[0].shared == ("praised", "fitting", "shoes")


def test_unsupported_sentence_marked():
    report = support_report("The user praises comfort and fit. They dislike synthetic leather.", ITEMS, REFERENCE)
    assert [s.supported for s in report.sentences] == [True, False]
    assert report.sentences[1].items == ()
    assert (report.supported, report.unsupported) == (1, 1)


def test_single_shared_word_and_low_score_are_not_support():
    one_word = support_report("The user likes shoes.", [("0", "shoes")], "")
    assert not one_word.sentences[0].supported
    long_sentence = "Shoes fit; also durability, price, colour, weight, laces, soles, packaging matter."
    low = support_report(long_sentence, [("0", "shoes fit")], "")  # 2 of 10 content words < 0.25
    assert not low.sentences[0].supported
    loose = support_report(long_sentence, [("0", "shoes fit")], "", SupportConfig(min_score=0.1))
    assert loose.sentences[0].supported


def test_request_words_are_not_evidence():
    reasoning = "The user writes product reviews about shoes."
    items = [("0", "This product review is about shoes.")]
    assert support_report(reasoning, items, "").sentences[0].supported  # product, review(s), shoes
    report = support_report(reasoning, items, "", request="Write a product review for this item.")
    assert not report.sentences[0].supported  # only "shoes" remains shared


def test_empty_reasoning_and_empty_items():
    empty = support_report("", ITEMS, REFERENCE)
    assert empty == SupportReport((), 0.0, False, "")
    assert empty.unsupported == 0
    no_items = support_report("The user praises comfort. They hate rain.", [], REFERENCE)
    assert len(no_items.sentences) == 2
    assert no_items.unsupported == 2


# --- copy check --------------------------------------------------------------------------------


def test_copy_suggested_when_reasoning_quotes_eight_words_of_reference():
    reasoning = "- The user values dry feet.\n- They kept my feet dry through three days of heavy rain, it seems."
    report = support_report(reasoning, ITEMS, REFERENCE)
    assert report.suggest_copy
    assert report.copied_phrase == "They kept my feet dry through three days of heavy rain"  # as written
    assert report.copied_words == 11


def test_no_copy_suggested_for_an_honest_summary():
    reasoning = "- The user praises comfort and fit.\n- The user writes short, upbeat reviews about footwear."
    report = support_report(reasoning, ITEMS, REFERENCE)
    assert not report.suggest_copy
    assert report.copy_overlap == 0.0
    assert report.copied_words < 8


def test_seven_shared_words_alone_do_not_suggest_but_the_overlap_share_can():
    seven = "they kept my feet dry through three"
    padded = f"The user likes long walks in nature and writes detailed notes about gear; {seven} and more."
    assert not support_report(padded, [], REFERENCE).suggest_copy  # 7 words, 4 of 21 4-grams
    short = support_report(f"Notes: {seven}.", [], REFERENCE)  # 4 of 5 4-grams shared
    assert short.copy_overlap == pytest.approx(4 / 5)
    assert short.suggest_copy


def test_copy_check_ignores_case_and_punctuation():
    report = support_report("KEPT my feet -- dry through three days, of HEAVY rain", [], REFERENCE)
    assert report.suggest_copy
    assert report.copied_phrase == "KEPT my feet -- dry through three days, of HEAVY rain"


# --- format ------------------------------------------------------------------------------------


def test_format_report_markers_ids_and_copy_suggestion():
    reasoning = "- The user praises comfort and fit.\n- They dislike synthetic leather.\n- They kept my feet dry through three days of heavy rain."
    text = format_report(support_report(reasoning, ITEMS, REFERENCE))
    lines = text.splitlines()
    assert lines[0].startswith("[+]") and "[?]" in lines[0] and "[!]" in lines[0]  # the legend
    assert "[+] The user praises comfort and fit.   <- item 3 (0.67: comfort, fit)" in lines
    assert "[?] They dislike synthetic leather.   <- nothing in the retrieved profile supports this" in lines
    assert "1 of 3 sentences supported by the retrieved items." in lines
    assert lines[-1].startswith("[!] copy check: ")
    assert '(11 words): "They kept my feet dry through three days of heavy rain"' in lines[-1]
    assert 'suggest ticking "copies the expected output"' in lines[-1]


def test_format_report_is_plain_text_with_data_verbatim():
    reasoning = "The user writes <b>bold</b> & <script>x</script> about fit comfort."
    text = format_report(support_report(reasoning, [("<i>7</i>", "fit comfort")], ""))
    assert "<b>bold</b> & <script>x</script>" in text  # not escaped, not interpreted: a textbox shows it as is
    assert "item <i>7</i> (" in text
    assert "&amp;" not in text and "&lt;" not in text
    assert "suggest ticking" not in text


def test_format_report_empty_and_long_phrase_shortened():
    text = format_report(support_report("", [], ""))
    assert "0 of 0 sentences" in text and "no sentences" in text
    long_ref = " ".join(f"word{i}" for i in range(200))
    text = format_report(support_report(long_ref, [], long_ref))
    assert "(200 words)" in text and '..."' in text
    assert len(text.splitlines()[-1]) < 400  # the copy line; the sentence line shows the sentence whole


# --- record convenience and errors -------------------------------------------------------------


def test_report_for_record_looks_up_items_and_uses_request_and_output():
    record = review_record()  # profile ids "0", "1", "2"; request mentions "toddlers"
    ids = [item.item_id for item in record.profile]
    reasoning = "- The user worries about sharp edges and safety for toddlers.\n- My kids adore this tent."
    report = report_for_record(reasoning, record, [ids[2], "unknown", ids[2], ids[1]])
    first, second = report.sentences
    assert [i.item_id for i in first.items] == [ids[2]]
    assert "toddlers" not in first.items[0].shared  # a request word
    assert {"sharp", "edges"} <= set(first.items[0].shared)
    assert not second.supported
    assert report.copied_phrase == "My kids adore this tent"  # record.output is the reference
    assert report_for_record(reasoning, record, [], reference="").copied_phrase == ""
    assert report_for_record(reasoning, record, []).unsupported == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda: support_report(None, [], ""),
        lambda: support_report("x", "not pairs", ""),
        lambda: support_report("x", [("only one",)], ""),
        lambda: support_report("x", [("0", 5)], ""),
        lambda: support_report("x", [], None),
        lambda: support_report("x", [], "", request=3),
        lambda: SupportConfig(min_shared_words=0),
        lambda: SupportConfig(min_score=1.5),
        lambda: SupportConfig(copy_ngram=True),
        lambda: report_for_record("x", review_record(), "0"),
    ],
)
def test_bad_arguments_are_input_errors(call):
    with pytest.raises(InputError) as raised:
        call()
    assert isinstance(raised.value, RestpgError)
