import pytest

from restpg.evaluation.metrics import METRIC_NAMES, LexicalMetrics, LexicalReward

# Hugging Face evaluate's own documented example for `meteor` (its docstring): 0.6944.
EVALUATE_PRED = "It is a guide to action which ensures that the military always obeys the commands of the party"
EVALUATE_REF = "It is a guide to action that ensures that the military will forever heed Party commands"


def test_meteor_matches_evaluate_with_wordnet(metrics):
    assert "wordnet" in metrics.variant and "NO synonyms" not in metrics.variant
    assert round(metrics.score(EVALUATE_PRED, EVALUATE_REF)["meteor"], 4) == 0.6944


def test_rouge_values_computed_once_with_evaluate_defaults(metrics):
    # Values written from evaluate.load("rouge").compute(..., use_aggregator=False) semantics:
    # F1 of unigram overlap (rouge1) and of the longest common subsequence (rougeL), no stemming.
    scores = metrics.score("the cat sat on the mat", "the cat is on the mat")
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rougeL"] == pytest.approx(5 / 6)
    scores = metrics.score("mat the on sat cat the", "the cat sat on the mat")
    assert scores["rouge1"] == pytest.approx(1.0)
    assert scores["rougeL"] == pytest.approx(3 / 6)  # LCS "the sat the"
    # No stemmer: "cats" and "cat" do not match (evaluate's default use_stemmer=False).
    assert metrics.score("cats", "cat")["rouge1"] == 0.0


def test_pairs_from_longlamp_like_text(metrics):
    reference = (
        "My kids adore this tent. The fabric is soft, and the poles are covered. "
        "As always I checked for small parts: none."
    )
    assert metrics.score(reference, reference) == {
        "rouge1": pytest.approx(1.0),
        "rougeL": pytest.approx(1.0),
        "meteor": pytest.approx(0.9998, abs=1e-3),
    }
    unrelated = metrics.score("Quarterly revenue grew by four percent.", reference)
    assert all(unrelated[name] < 0.1 for name in METRIC_NAMES)


def test_corpus_is_mean_of_pairs(metrics):
    preds = ["the cat sat on the mat", "hello world"]
    refs = ["the cat is on the mat", "goodbye moon"]
    per_pair = metrics.score_pairs(preds, refs)
    corpus = metrics.corpus(preds, refs)
    for name in METRIC_NAMES:
        assert corpus[name] == pytest.approx((per_pair[0][name] + per_pair[1][name]) / 2)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.corpus(preds, refs[:1])
    with pytest.raises(ValueError, match="no pairs"):
        metrics.corpus([], [])


def test_without_wordnet_the_variant_says_so(monkeypatch, tmp_path, metrics):
    import restpg.evaluation.metrics as module

    monkeypatch.setattr(module, "_nltk_has", lambda resource: False)
    monkeypatch.setenv("RESTPG_WORDNET_DIR", str(tmp_path))  # an empty folder: no WordNet files
    with pytest.warns(RuntimeWarning, match="WITHOUT WordNet synonyms"):
        plain = LexicalMetrics(cache_dir=tmp_path)
    assert "NO synonyms" in plain.variant
    # "automobile"/"car" and "quick"/"fast" match only as WordNet synonyms.
    with_synonyms = metrics.score("the automobile is quick", "the car is fast")["meteor"]
    without = plain.score("the automobile is quick", "the car is fast")["meteor"]
    assert without < with_synonyms


def test_lexical_reward():
    scores = {"rouge1": 0.4, "rougeL": 0.2, "meteor": 0.6}
    assert LexicalReward()(scores) == pytest.approx(0.2)
    assert LexicalReward({"rouge1": 1.0, "meteor": 1.0})(scores) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown metric"):
        LexicalReward({"bleu": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        LexicalReward({"rougeL": -1.0})


def test_fast_rouge_equals_rouge_score_on_every_sample_pair(metrics):
    """restpg's ROUGE (rapidfuzz LCS) gives rouge-score's own numbers, pair for pair."""
    from rouge_score import rouge_scorer

    from restpg.data.longlamp import load_records, sample_path

    reference_scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    texts = [
        r.output
        for task in ("product_review", "topic_writing")
        for r in load_records(sample_path(task, "user", "train"), task).records
    ]
    pairs = list(zip(texts, texts[1:] + texts[:1])) + [("", "x"), ("x", ""), ("same words", "same words")]
    for prediction, reference in pairs:
        expected = reference_scorer.score(reference, prediction)
        ours = metrics.rouge(prediction, reference)
        assert ours["rouge1"] == pytest.approx(expected["rouge1"].fmeasure, abs=1e-12)
        assert ours["rougeL"] == pytest.approx(expected["rougeL"].fmeasure, abs=1e-12)
