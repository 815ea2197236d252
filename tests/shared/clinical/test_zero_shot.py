"""Zero-shot answers: intervals, value bins, history prompts, and a planted world where the
answer is known (an outcome that always follows the index event vs one that never does)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from fedehr.shared.clinical.concepts import CodeIndex
from fedehr.shared.clinical.explain import Explanation, Influence, explain
from fedehr.shared.clinical.prompt import parse_prompt, resolve_prompt
from fedehr.shared.clinical.query import Outcome, outcome_from_task
from fedehr.shared.clinical.zero_shot import (
    build_prompts,
    outcome_tokens,
    predict,
    predict_detailed,
    simulate,
    token_budget,
    wilson_interval,
)
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import QUANTILE_TOKENS, Vocabulary
from tests.shared.clinical import planted

ALPHA = [2, 4, 6, 8, 10, 12]  # always followed by a cardiac arrest
BETA = [1, 3, 5, 7, 9, 11]  # never


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return planted.world(tmp_path_factory)


def ask(world, text: str) -> Outcome:
    index = CodeIndex.for_dataset(world.dataset.codes())
    return outcome_from_task(resolve_prompt(parse_prompt(text), index).task_config())


def test_wilson_interval_matches_the_closed_form():
    low, high = wilson_interval(np.array([0, 5, 10]), 10)
    assert low[0] == 0.0 and high[0] == pytest.approx(0.2775, abs=1e-4)
    assert low[1] == pytest.approx(0.2366, abs=1e-4) and high[1] == pytest.approx(0.7634, 1e-4)
    assert high[2] == 1.0 and low[2] == pytest.approx(0.7225, abs=1e-4)


def test_a_value_condition_keeps_the_bins_mostly_inside_it():
    vocab = Vocabulary.build({"LAB//X//mg/dL": 10}, min_count=1,
                             bin_edges={"LAB//X//mg/dL": [1.0, 2.0, 3.0]})
    q = {vocab.id(t): i for i, t in enumerate(QUANTILE_TOKENS)}
    mapping = CodeMapping()

    def bins(**cond):
        outcome = Outcome(codes=("LAB//X//mg/dL",), horizon=timedelta(days=1), **cond)
        ids = outcome_tokens(outcome, vocab, mapping, []).value_bins[vocab.id("LAB//X//mg/dL")]
        return sorted(q[i] for i in ids)

    # bins: Q0 (<1), Q1 [1,2), Q2 [2,3), Q3 (>=3); the open ends get their neighbour's width
    assert bins(min_value=2.0) == [2, 3]
    assert bins(min_value=2.4) == [2, 3]  # [2,3) is 60 % inside
    assert bins(min_value=2.6) == [3]
    assert bins(max_value=1.0, max_inclusive=False) == [0]
    assert bins(min_value=1.2, max_value=2.9) == [1, 2]



def test_with_value_tokens_the_outcome_is_the_kept_bins_own_tokens():
    code = "LAB//X//mg/dL"
    vocab = Vocabulary.build({code: 10}, min_count=1,
                             bin_edges={code: [1.0, 2.0, 3.0]}).with_value_tokens()
    outcome = Outcome(codes=(code,), horizon=timedelta(days=1), min_value=2.0)
    otoks = outcome_tokens(outcome, vocab, CodeMapping(), [])
    assert sorted(vocab.tokens[i] for i in otoks.codes) == [f"{code}//Q2", f"{code}//Q3"]
    assert not otoks.value_bins  # nothing to read after the code: the bin is the token
    any_value = outcome_tokens(Outcome(codes=(code,), horizon=timedelta(days=1)), vocab,
                               CodeMapping(), [])
    assert len(any_value.codes) == 5  # the bare code and its four bins

def test_an_outcome_outside_the_vocabulary_is_refused():
    vocab = Vocabulary.build({"A": 5}, min_count=1)
    outcome = Outcome(codes=("NOT_THERE",), horizon=timedelta(days=1))
    with pytest.raises(Exception, match="not in the model's vocabulary|none of the outcome"):
        outcome_tokens(outcome, vocab, CodeMapping(), [])


def test_prompts_hold_the_history_up_to_the_prediction_time(world):
    mapping = CodeMapping.from_config(None, world.dataset.codes())
    at = [planted.index_time(2), planted.index_time(3) - timedelta(hours=1)]
    labels = pl.DataFrame({"subject_id": [2, 3], "prediction_time": at})
    prompts = build_prompts(world.dataset, world.vocab, mapping, 24, labels)
    first, _ = prompts.row(0)
    second, _ = prompts.row(1)
    names = [world.vocab.tokens[t] for t in first]
    assert names[0] == "[BOS]" and names[-1] == "PROC//ALPHA"  # the index is history
    assert "EVENT//CARDIAC_ARREST" not in names  # one hour later: the future
    assert "PROC//BETA" not in [world.vocab.tokens[t] for t in second]
    assert prompts.gap_days[0] == pytest.approx(0.0, abs=1e-6)
    # last event: the lab at 16:30; prediction at 03:00 the next morning
    assert prompts.gap_days[1] == pytest.approx(10.5 / 24, abs=1e-4)


def test_planted_outcome_is_likely_after_alpha_and_unlikely_after_beta(world):
    outcome = ask(world, "cardiac arrest within 1 day after procedure")
    result = predict(world.model, world.vocab, world.dataset, planted.labels(ALPHA + BETA),
                     outcome, samples=16, seed=0)
    assert result.columns == ["subject_id", "prediction_time", "probability", "ci_low",
                              "ci_high"]
    assert result["subject_id"].to_list() == ALPHA + BETA  # label order kept
    p = result["probability"].to_numpy()
    assert ((0 <= result["ci_low"]) & (result["ci_low"] <= result["probability"])
            & (result["probability"] <= result["ci_high"]) & (result["ci_high"] <= 1)).all()
    assert p[:6].mean() > 0.7, p
    assert p[6:].mean() < 0.2, p


def test_the_same_seed_gives_the_same_answer_whatever_the_batching(world):
    outcome = ask(world, "cardiac arrest within 2 days after procedure")
    labels = planted.labels(ALPHA[:3] + BETA[:3])
    a = predict_detailed(world.model, world.vocab, world.dataset, labels, outcome,
                         samples=8, seed=3, batch_size=48)
    b = predict_detailed(world.model, world.vocab, world.dataset, labels, outcome,
                         samples=8, seed=3, batch_size=8)
    # the same tokens drawn; each one's chance of the outcome up to float rounding (the
    # batch's matrix products sum in another order)
    assert np.array_equal(a.simulation.reach_days, b.simulation.reach_days)
    np.testing.assert_allclose(a.simulation.per_sample, b.simulation.per_sample, rtol=1e-5,
                               atol=1e-9)
    assert a.simulation.generated_tokens > 0 and a.patients_per_second > 0


def test_the_summed_hazard_estimates_what_counting_estimates(world):
    """Both estimators target P(outcome drawn within the window): on the same
    continuations their answers agree within Monte Carlo error."""
    outcome = ask(world, "cardiac arrest within 2 days after procedure")
    labels = planted.labels(ALPHA[:3] + BETA[:3])
    answers = {e: predict(world.model, world.vocab, world.dataset, labels, outcome, samples=64,
                          seed=1, estimator=e)["probability"].to_numpy()
               for e in ("counted", "expected")}
    np.testing.assert_allclose(answers["expected"], answers["counted"], atol=0.1)
    assert answers["expected"][:3].min() > 0.7 and answers["expected"][3:].max() < 0.2


def test_explanation_names_the_index_event_that_drove_the_answer(world):
    outcome = ask(world, "cardiac arrest within 1 day after procedure")
    result = predict_detailed(world.model, world.vocab, world.dataset, planted.labels([4]),
                              outcome, samples=16, seed=0)
    index = CodeIndex.for_dataset(world.dataset.codes())
    expl = explain(world.model, world.vocab, result.prompts, 0, outcome, result.outcome_tokens,
                   index, samples=16, seed=0, max_groups=6)
    top = expl.influences[0]
    assert top.token == "PROC//ALPHA" and top.description == "Alpha procedure"
    assert top.delta > 0.3 and top.beyond_noise
    assert expl.probability == pytest.approx(result.frame["probability"][0])
    assert expl.noise_words(1) == "The change shown exceeds twice its standard error."


def test_an_explanation_within_the_noise_says_so():
    def influence(delta: float, stderr: float) -> Influence:
        return Influence("A", "a", 1, 0.1, delta, stderr, 32)

    expl = Explanation(0.1, [influence(0.03, 0.02), influence(-0.01, 0.02),
                             influence(0.02, float("nan"))], 32, 3, 1.0, 32)
    assert not any(i.beyond_noise for i in expl.influences)  # nan: one pair, no error bar
    assert expl.noise_words(4).startswith("None of these changes exceeds twice")
    expl.influences.insert(0, influence(-0.05, 0.02))
    assert expl.noise_words(4) == ("1 of the 4 changes shown exceeds twice its standard "
                                   "error; the others are within the sampling noise.")
    expl.influences.insert(0, influence(0.09, 0.02))
    assert expl.noise_words(2) == "All 2 changes shown exceed twice their standard error."
    assert expl.noise_words(3).startswith("2 of the 3 changes shown exceed twice their")


def test_the_token_budget_grows_with_the_horizon(world):
    mapping = CodeMapping.from_config(None, world.dataset.codes())
    budgets = []
    for text in ("cardiac arrest within 1 hour after procedure",
                 "cardiac arrest within 90 days after procedure"):
        outcome = ask(world, text)
        otoks = outcome_tokens(outcome, world.vocab, mapping, [])
        budgets.append(token_budget(world.dataset, world.vocab, mapping, outcome, otoks,
                                    minimum=1))
    assert budgets[0] < budgets[1]


def test_continuations_that_run_out_of_tokens_are_undecided_not_no(world):
    outcome = ask(world, "cardiac arrest within 90 days after procedure")
    result = predict_detailed(world.model, world.vocab, world.dataset, planted.labels(BETA[:2]),
                              outcome, samples=4, seed=0, max_new_tokens=1)
    row = result.frame.row(0, named=True)
    assert row["decided"] == 0 and row["truncated"] == 4
    assert np.isnan(row["probability"]) and np.isnan(row["ci_low"])


def test_sampling_again_only_the_undecided_equals_sampling_all_again(world):
    """The second pass under a wider budget redoes only the continuations that ran out:
    the decided ones would repeat themselves, because U[k, s] does not depend on the
    budget. Fails if the uniforms' table is drawn sample-major (its rows then shift)."""
    outcome = ask(world, "cardiac arrest within 90 days after procedure")
    mapping = CodeMapping.from_config(None, world.dataset.codes())
    otoks = outcome_tokens(outcome, world.vocab, mapping, [])
    prompts = build_prompts(world.dataset, world.vocab, mapping, world.model.config.max_len,
                            planted.labels(ALPHA[:3] + BETA[:3]))

    def run(budget, only=None):
        return simulate(world.model, world.vocab, prompts, outcome, otoks, samples=6, seed=5,
                        max_new_tokens=budget, batch_rows=12, only=only)

    short = run(32)
    redo = short.truncated_per_sample
    assert redo[:3].sum() == 0 and 0 < redo[3:].sum() < redo[3:].size  # beta rows: both
    merged = short.merged(run(64, only=redo), redo)
    full = run(64)
    for field in ("decided_per_sample", "truncated_per_sample", "reach_days"):
        assert np.array_equal(getattr(merged, field), getattr(full, field)), field
    # a redo batch of other rows rounds float32 differently (1.7e-6 relative, seen in CI);
    # a shifted row of uniforms would move a probability by orders more
    np.testing.assert_allclose(merged.per_sample, full.per_sample, rtol=1e-5, atol=1e-9)
    assert merged.generated_tokens < short.generated_tokens + full.generated_tokens


def test_undecided_continuations_are_sampled_again_while_too_many_remain(world, monkeypatch):
    """A model whose clock runs slower than the data's: each pass redoes only those still
    undecided, under a budget at most 8x the last, until at most 5 % are left or the
    passes end. Fails if the widening stops after one pass."""
    from fedehr.shared.clinical import zero_shot

    monkeypatch.setattr(zero_shot, "token_budget", lambda *a, **k: 16)  # far too short
    budgets, redone = [], []

    def recording(*args, max_new_tokens, only=None, **kwargs):
        budgets.append(max_new_tokens)
        redone.append(None if only is None else int(only.sum()))
        return simulate(*args, max_new_tokens=max_new_tokens, only=only, **kwargs)

    monkeypatch.setattr(zero_shot, "simulate", recording)
    # 120 days: the planted model's continuations reach it over the last two passes
    outcome = ask(world, "cardiac arrest within 120 days after procedure")
    result = predict_detailed(world.model, world.vocab, world.dataset,
                              planted.labels(BETA[:3]), outcome, samples=8, seed=0)
    assert budgets[0] == 16 and len(budgets) == 1 + zero_shot.MAX_WIDER_PASSES
    assert all(last < now <= 8 * last for last, now in zip(budgets, budgets[1:], strict=False))
    assert redone[0] is None and redone[1] == 24 and 0 < redone[2] < 24
    assert result.simulation.max_new_tokens == budgets[-1]
    assert int(result.frame["truncated"].sum()) < redone[2]


def test_death_closes_the_window_of_another_outcome():
    from fedehr.shared.clinical.zero_shot import OutcomeTokens, _Row, _scan

    death, arrest = 7, 8
    otoks = OutcomeTokens(frozenset({arrest}), {}, frozenset(), terminal=frozenset({death}))
    row = _Row(prompt=0, sample=0, base=0.0, start=0.0, end=30.0, prefix=1)
    _scan(row, death, 2.0, otoks)
    assert row.decided and not row.hit and not row.truncated


def test_a_discharge_before_the_prediction_time_contradicts_the_history():
    from fedehr.shared.clinical.zero_shot import OutcomeTokens, _Row, _scan

    discharge = 9
    otoks = OutcomeTokens(frozenset({discharge}), {}, frozenset({discharge}))
    # the last event was 0.7 days before the prediction time, known to be empty since
    row = _Row(prompt=0, sample=0, base=0.0, start=0.7, end=6.7, prefix=1, known=0.7)
    _scan(row, discharge, 0.3, otoks)
    assert row.rejected and row.decided and not row.hit


def test_the_known_stay_masks_the_leaving_tokens_and_weighs_their_chance():
    import torch

    from fedehr.shared.clinical.zero_shot import _keep_the_stay, _Row

    leaving = torch.tensor([False, True, False, True])
    logits = torch.log(torch.tensor([[0.4, 0.1, 0.3, 0.2], [0.4, 0.1, 0.3, 0.2]],
                                    dtype=torch.float64))
    early = _Row(prompt=0, sample=0, base=0.0, start=0.5, end=2.0, prefix=1, known=0.5)
    late = _Row(prompt=1, sample=0, base=0.0, start=0.5, end=2.0, prefix=1, known=0.5)
    early.weight = 0.5
    _keep_the_stay(logits, [early, late], torch.tensor([0.2, 0.7]), leaving, 1.0)
    assert early.weight == pytest.approx(0.5 * 0.7) and late.weight == 1.0
    assert torch.isinf(logits[0, [1, 3]]).all() and torch.isfinite(logits[0, [0, 2]]).all()
    assert torch.isfinite(logits[1]).all()  # past the prediction time: untouched


def test_weighted_conditioning_answers_where_rejection_discards_every_continuation(world):
    """Prediction 54 minutes after the alpha procedure: the model puts the cardiac arrest
    before then (its time bucket), which the history contradicts. Rejection discards
    every continuation; weighting answers from the ones that kept the stay and says how
    unlikely the model found it. Beta rows never leave early: both agree."""
    from fedehr.shared.clinical.ask_cli import stay_words

    outcome = ask(world, "cardiac arrest within 1 day after procedure")
    subjects = ALPHA[:2] + BETA[:2]
    labels = planted.labels(subjects).with_columns(
        pl.col("prediction_time") + pl.duration(minutes=54))
    frames = {c: predict_detailed(world.model, world.vocab, world.dataset, labels, outcome,
                                  samples=16, seed=0, conditioning=c).frame
              for c in ("rejection", "weighted")}
    rejected, weighted = frames["rejection"], frames["weighted"]
    assert rejected["rejected"].to_list()[:2] == [16, 16]
    assert rejected["probability"][:2].is_nan().all()
    assert weighted["rejected"].sum() == 0 and weighted["decided"].to_list() == [16] * 4
    assert (weighted["left_early"][:2] > 0.9).all() and (weighted["left_early"][2:] < 0.05).all()
    assert not weighted["probability"].is_nan().any()
    np.testing.assert_allclose(weighted["probability"][2:], rejected["probability"][2:],
                               atol=0.02)
    assert "chance that the patient had left" in stay_words(weighted.row(0, named=True))
    assert stay_words(weighted.row(2, named=True)) == ""
    assert stay_words(rejected.row(0, named=True)).startswith("16 put a discharge")


@pytest.mark.parametrize("max_new_tokens", [0, -5])
def test_a_zero_token_budget_is_refused_not_answered(world, max_new_tokens):
    from fedehr.shared.errors import FedEHRError

    outcome = ask(world, "cardiac arrest within 1 day after procedure")
    with pytest.raises(FedEHRError, match="max_new_tokens"):
        predict(world.model, world.vocab, world.dataset, planted.labels(ALPHA[:1]), outcome,
                samples=4, seed=0, max_new_tokens=max_new_tokens)
