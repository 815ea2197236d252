"""Zero-shot answers: sample future timelines, weigh the outcome, report a probability.

The idea is ETHOS' (Renc et al., 2024, "Zero shot health trajectory prediction
using transformer"): the model was trained to continue patient timelines, so
the probability of an outcome within a window is estimated by letting it
continue the patient's history K times. ETHOS counts the continuations in which
the outcome occurs ("counted": p = hits / K). With K = 8-32 that cannot tell a
0.5 % risk from a 3 % one (nearly every row reads 0 of K, and rows tie), so the
default is the "expected" estimator: the same continuations, the same
probability, less Monte Carlo noise. At every step where the outcome could
happen, the model's own probability h of drawing an outcome token is added up
until the continuation ends (the outcome drawn, or the window closed). The
expected sum of these hazards equals the probability that the outcome is drawn
within the window (a counting process minus its compensator is a martingale),
so each continuation carries a number close to its chance of the outcome
instead of a 0 or 1. A sum above 1 (rare: large hazards survived) is cut to 1.
p is the mean over decided continuations, with a Wilson score interval on that
mean (closed form, no SciPy needed; for values in [0, 1] the variance is at most
p(1 - p), so the interval is conservative).

What is approximate (and why), in the order it happens:

* **History.** The prompt is the patient's events up to and including the
  prediction time, encoded exactly as in training (`tokenizer.encode`), as one
  window cut where every inference window is cut (`history.history_windows`,
  `windows.window_span`): [BOS], static prefix (age at the window start), the
  most recent events that fit `max_len`. Older events beyond the context are
  dropped.
  Note and image vectors are not recomputed here: their marker tokens stay,
  the vectors are zero.
* **Outcome codes.** Outcome codes are mapped to vocabulary tokens as the
  tokenizer maps data (`CodeMapping`, folding, UNK). A code folded into an
  ancestor counts as the ancestor (broader than asked); a code outside the
  vocabulary cannot be generated and is reported.
* **Values.** A numeric condition ("creatinine above 2 mg/dL") is judged on the
  quantile token that follows the code: a bin counts when more than half of
  its range lies inside the condition (the open end bins are given the width
  of their neighbour). `OutcomeTokens.value_words` states the effective
  threshold, e.g. "Q8-Q9, values >= 1.96".
* **Time.** The model's clock advances by time tokens, which are buckets
  ("TIME//1d-2d"); each advances by the bucket's geometric mean (the open last
  bucket by 1.5 years). Events less than 5 minutes apart share a time. Time
  between the last recorded event and the prediction time is known to be
  empty, but the model is not told so: generated events before the
  prediction time are ignored, except those that contradict it (below).
* **Length.** A continuation stops when its window is decided: the outcome is
  seen, the clock passes the window end, an event closes the window ("before
  discharge"), or the timeline ends (death, [EOS]: nothing can follow). The
  token budget is read from the data (`token_budget`: how many tokens real
  records hold until such a window closes, at a high quantile, with a margin),
  so that continuations reach the question's horizon. A model whose clock runs
  slower than the data's (it emits few or short time tokens) leaves many
  continuations undecided under that budget; when more than 5 % are, the
  budget is re-derived from the model's own pace (`model_budget`: how far the
  undecided clocks got), at most 8x the last budget and 16384 tokens, and the
  undecided continuations are sampled again with it, up to twice (the decided
  ones would repeat themselves token for token: see `simulate`; a model's pace
  is not constant, so the second estimate reads clocks that got further). One
  that still runs out is *undecided*: it is reported (`decided`, `truncated`)
  and left out of the probability, which is hits / decided continuations;
  never counted as "no".
* **The known stay.** Nothing happened between the last history event and the
  prediction time: the patient was, e.g., still in hospital and alive at 24
  hours. A continuation that puts a discharge, a death or the outcome itself
  before the prediction time contradicts that and is *rejected* ("rejection"
  conditioning, the default): counted (`rejected`) and left out. "weighted"
  conditioning estimates the same conditional probability without discarding
  any: those tokens are masked while a continuation's clock is before the
  prediction time, and the continuation is weighted by the model's chance of not
  having drawn one (the product of 1 - P(closing token) over those steps); p is
  the weighted mean, its interval uses the effective count (sum w)^2 / sum w^2.
  `left_early` is the model's chance that the patient had left (under
  rejection: the rejected share). Measured on central models
  (benchmarks/zero_shot_rejections.py, 3 data seeds): the same AUROC, 1.2-1.7x
  the time, an effective count only ~5 % above rejection's decided count (the
  weights are near 0 or 1), so it is not the default.
  A context that fills `max_len` keeps [BOS] and the static prefix and drops
  its oldest events.

Sampling (`simulate`) follows `EHRModel.generate` token for token, but draws
from per-continuation uniforms (see its docstring) so that answers do not
depend on batching and explanations get common random numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from fedehr.shared.clinical.history import PREDICTION_TIME, history_events, history_windows
from fedehr.shared.clinical.query import Outcome
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import DataError, FedEHRError
from fedehr.shared.model.transformer import KVCache, last_position
from fedehr.shared.tokenizer.batch import PAD_ID
from fedehr.shared.tokenizer.encode import encode_events
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import (
    EOS,
    QUANTILE_TOKENS,
    TIME_TOKENS,
    UNK,
    Vocabulary,
)
from fedehr.shared.tokenizer.windows import window_span

Z_95 = 1.959963984540054


# -- the outcome in tokens ------------------------------------------------------------

@dataclass(frozen=True)
class OutcomeTokens:
    """Token ids that make an event count as the outcome, or close its window."""

    codes: frozenset[int]
    value_bins: dict[int, frozenset[int]]  # code id -> quantile ids that count (if a condition)
    stop: frozenset[int]
    notes: tuple[str, ...] = ()
    value_words: str = ""
    terminal: frozenset[int] = frozenset()  # death, end of record: the window closes


def time_token_days(vocab: Vocabulary) -> dict[int, float]:
    """Each TIME token's advance in days: the geometric mean of its bucket."""
    edges = list(vocab.time_edges_days)
    out = {}
    for i, tok in enumerate(TIME_TOKENS):
        lo = edges[i]
        hi = edges[i + 1] if i + 1 < len(edges) else 1.5 * lo
        out[vocab.id(tok)] = math.sqrt(lo * hi) if i + 1 < len(edges) else hi
    return out


def _bins_inside(edges: list[float], outcome: Outcome, factor: float) -> list[int]:
    """Quantile bins of one code whose range lies mostly inside the value condition."""
    lo_v = None if outcome.min_value is None else outcome.min_value * factor
    hi_v = None if outcome.max_value is None else outcome.max_value * factor
    n = min(len(edges) + 1, len(QUANTILE_TOKENS))
    keep = []
    for j in range(n):
        a = edges[j - 1] if j > 0 else None
        b = edges[j] if j < len(edges) else None
        width = _neighbour_width(edges, j)
        a = a if a is not None else b - width
        b = b if b is not None else a + width
        inside_lo = max(a, lo_v) if lo_v is not None else a
        inside_hi = min(b, hi_v) if hi_v is not None else b
        if b > a and (inside_hi - inside_lo) / (b - a) > 0.5:
            keep.append(j)
        elif b == a and outcome.matches_value(a / factor):  # a repeated edge: one value
            keep.append(j)
    return keep


def _neighbour_width(edges: list[float], j: int) -> float:
    if len(edges) >= 2:
        k = 0 if j == 0 else len(edges) - 2
        width = edges[k + 1] - edges[k]
        if width > 0:
            return width
    return max(abs(edges[0]) if edges else 1.0, 1.0)


def outcome_tokens(outcome: Outcome, vocab: Vocabulary, mapping: CodeMapping,
                   candidate_codes: list[str]) -> OutcomeTokens:
    """Map an Outcome's codes (dataset codes, patterns, or vocabulary tokens) to token ids."""
    notes: list[str] = []
    codes = list(outcome.codes) + [c for c in candidate_codes
                                   if outcome.patterns and outcome.matches_code(c)]
    q_ids = [vocab.id(t) for t in QUANTILE_TOKENS]
    ids: set[int] = set()
    bins: dict[int, frozenset[int]] = {}
    words = []
    for code in dict.fromkeys(codes):
        token, factor = _token_of(code, vocab, mapping)
        if token == UNK:
            notes.append(f"{code} is not in the model's vocabulary and cannot be generated")
            continue
        if token != code and token != mapping.map_code(code).code:
            notes.append(f"{code} is folded into {token} in the vocabulary; {token} counts")
        tid = vocab.id(token)
        joint = vocab.value_token_ids.get(token, [])
        if not outcome.has_value_condition:
            ids.update([tid, *joint])
            continue
        edges = vocab.bin_edges.get(token)
        if not edges:
            notes.append(f"{token} has no value bins; every occurrence counts")
            ids.add(tid)
            bins[tid] = frozenset(q_ids)
            continue
        kept = _bins_inside(edges, outcome, factor)
        if joint:  # the bin is part of the token: the kept bins' tokens are the outcome
            ids.update(joint[j] for j in kept)
        else:
            ids.add(tid)
            bins[tid] = frozenset(q_ids[j] for j in kept)
        words.append(_bin_words(token, kept, edges, factor))
    if not ids and not words:  # words: codes found, but no value bin counts
        raise FedEHRError("none of the outcome's codes is in the model's vocabulary",
                          where=outcome.name, fix="choose an outcome the model was trained on "
                          "(see the checkpoint's vocab.json)")
    stop: set[int] = set()
    for code in list(outcome.stop_codes) + [c for c in candidate_codes if outcome.stop_patterns
                                            and outcome.is_stop(c)]:
        token, _ = _token_of(code, vocab, mapping)
        if token != UNK:
            stop.add(vocab.id(token))
            stop.update(vocab.value_token_ids.get(token, []))
    terminal = {vocab.id(t) for t in (EOS, S.DEATH_CODE) if t in vocab}
    return OutcomeTokens(frozenset(ids), bins, frozenset(stop), tuple(notes), "; ".join(words),
                         frozenset(terminal))


def _token_of(code: str, vocab: Vocabulary, mapping: CodeMapping) -> tuple[str, float]:
    if code in vocab:
        return code, 1.0
    mapped = mapping.map_code(code)
    return vocab.resolve(mapped.code), mapped.factor


def _bin_words(token: str, kept: list[int], edges: list[float], factor: float) -> str:
    if not kept:
        return f"{token}: no value bin lies inside the condition (it can never count)"
    lo = edges[kept[0] - 1] / factor if kept[0] > 0 else None
    hi = edges[kept[-1]] / factor if kept[-1] < len(edges) else None
    rng = (f">= {lo:.3g}" if hi is None else f"< {hi:.3g}" if lo is None
           else f"{lo:.3g} to {hi:.3g}") if (lo, hi) != (None, None) else "any value"
    return f"{token}: bins Q{kept[0]}-Q{kept[-1]} (values {rng})"


# -- prompts from history ------------------------------------------------------------------

@dataclass
class Prompts:
    """Right-padded history windows, one per (subject, prediction time)."""

    tokens: torch.Tensor  # int64 [N, T]
    times: torch.Tensor  # float32 [N, T], days since the window's first event
    gap_days: np.ndarray  # float64 [N]: prediction time - last history event
    prefix_len: np.ndarray  # int64 [N]: BOS + static tokens at the start of each row

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = int((self.tokens[i] != PAD_ID).sum())
        return self.tokens[i, :n].numpy().copy(), self.times[i, :n].numpy().copy()


def build_prompts(dataset: MEDSDataset, vocab: Vocabulary, mapping: CodeMapping, max_len: int,
                  labels: pl.DataFrame) -> Prompts:
    """One history window per label row (subject_id, prediction_time): the events up to and
    including that time, cut as every inference window is (`history.history_windows`)."""
    queries = labels.select(pl.col(S.SUBJECT_ID).cast(pl.Int64),
                            pl.col(PREDICTION_TIME).cast(pl.Datetime("us")))
    events = history_events(dataset, queries)
    windows = history_windows(dataset, queries, vocab, max_len=max_len, mapping=mapping,
                              events=events)
    n = queries.height
    tokens = torch.full((n, max_len), PAD_ID, dtype=torch.long)
    times = torch.zeros(n, max_len)
    prefix_len = np.ones(n, dtype=np.int64)
    gap = np.zeros(n)
    first = (events.filter(pl.col(S.TIME).is_not_null() & (pl.col(S.CODE) != S.BIRTH_CODE))
             .group_by(S.SUBJECT_ID).agg(pl.col(S.TIME).min()))
    t0 = dict(first.iter_rows())
    at = queries[PREDICTION_TIME].to_list()
    c = windows.cache
    for r in range(n):
        tok, tim, *_ = windows[r]
        tokens[r], times[r] = tok, tim
        start, stop, n_static = windows.window_bounds(r)
        prefix_len[r] = 1 + n_static
        if stop > start and r in t0:  # days from the last history event to the prediction
            gap[r] = max(0.0, (at[r] - t0[r]).total_seconds() / 86400.0
                         - float(c.times[stop - 1]))
    return Prompts(tokens, times, gap, prefix_len)


# -- how many tokens a window needs ------------------------------------------------------

BUDGET_QUANTILE = 0.99
BUDGET_MARGIN = 1.5
MIN_BUDGET = 32
MAX_BUDGET = 4096  # the data's budget, for every continuation
MAX_WIDER_BUDGET = 16384  # the model's pace, only for those still undecided
BUDGET_PATIENTS = 400
UNDECIDED_TOLERANCE = 0.05  # above this share, another pass at the model's own pace
MAX_WIDEN = 8  # a pass's budget is at most this many times the last one's
MAX_WIDER_PASSES = 2  # after the first: pace read from ever further clocks


def token_budget(dataset: MEDSDataset, vocab: Vocabulary, mapping: CodeMapping,
                 outcome: Outcome, otoks: OutcomeTokens, *, patients: int = BUDGET_PATIENTS,
                 quantile: float = BUDGET_QUANTILE, margin: float = BUDGET_MARGIN,
                 minimum: int = MIN_BUDGET) -> int:
    """Tokens a continuation may need to close the outcome's window, read from the data.

    From every event of (up to) `patients` records of `dataset`, count the tokens the
    record holds until the window closes: its clock passes the horizon, or an event
    closes it (`outcome.stop_codes`, death). The budget is the `quantile` of those
    counts times `margin` (the model's timelines may be denser than the data's),
    within [minimum, MAX_BUDGET]. Counts stop at a record's end, so a dataset of
    short records gives a low budget; continuations that still run out are reported
    as undecided, never as "no".
    """
    subjects = (dataset.scan().select(S.SUBJECT_ID).unique().sort(S.SUBJECT_ID)
                .head(patients).collect()[S.SUBJECT_ID])
    frame = dataset.scan().filter(pl.col(S.SUBJECT_ID).is_in(subjects.implode())).collect()
    if frame.is_empty():
        return minimum
    encoded = encode_events(frame.with_columns(pl.col(S.TIME).cast(pl.Datetime("us"))),
                            vocab, mapping)
    horizon = outcome.horizon.total_seconds() / 86400.0
    closing = np.zeros(len(vocab), dtype=bool)
    closing[list(otoks.stop | otoks.terminal)] = True
    starts = ~vocab.continuation_mask()
    counts = []
    for i in range(len(encoded)):
        lo = int(encoded.offsets[i]) + int(encoded.static_len[i])
        tok = encoded.tokens[lo:int(encoded.offsets[i + 1])].astype(np.int64)
        tim = encoded.times[lo:int(encoded.offsets[i + 1])].astype(np.float64)
        if not len(tok):
            continue
        pos = np.flatnonzero(starts[tok])
        end = np.searchsorted(tim, tim[pos] + horizon, side="right")
        close = np.flatnonzero(closing[tok])
        if len(close):  # the first closing event after each position ends it too
            k = np.searchsorted(close, pos, side="right")
            nxt = np.where(k < len(close), close[np.minimum(k, len(close) - 1)] + 1, len(tok))
            end = np.minimum(end, nxt)
        counts.append(end - pos)
    if not counts:
        return minimum
    need = float(np.quantile(np.concatenate(counts), quantile)) * margin
    return int(min(MAX_BUDGET, max(minimum, math.ceil(need))))


def model_budget(sim: Simulation, prompts: Prompts, outcome: Outcome, *,
                 tolerance: float = UNDECIDED_TOLERANCE, widen: int = MAX_WIDEN) -> int:
    """A wider budget from the model's own pace, when more than `tolerance` of the
    continuations ran out of tokens under the last budget (`sim.max_new_tokens`).

    An undecided continuation's clock reached `reach` days of its window's `end`
    after `budget` tokens; at that pace it needs budget * end / reach. The budget
    is the 90th percentile of that over the undecided continuations, at most
    `widen` times the last budget and MAX_WIDER_BUDGET; 0 when no pass is due.
    """
    undecided = sim.truncated.sum() / max(1, sim.per_sample.size)
    if undecided <= tolerance or sim.max_new_tokens >= MAX_WIDER_BUDGET:
        return 0
    horizon = outcome.horizon.total_seconds() / 86400.0
    end = (prompts.gap_days + horizon)[:, None].repeat(sim.samples, 1)
    out_of_tokens = sim.truncated_per_sample
    pace = sim.max_new_tokens * end[out_of_tokens] / np.maximum(
        sim.reach_days[out_of_tokens], 1e-3)
    need = float(np.quantile(pace, 0.9))
    return int(min(MAX_WIDER_BUDGET, widen * sim.max_new_tokens, math.ceil(need)))


# -- simulation ----------------------------------------------------------------------------

@dataclass
class Simulation:
    """The outcome's weight in each continuation of each prompt row."""

    hits: np.ndarray  # float64 [N]: expected decided continuations with the outcome
    samples: int
    truncated: np.ndarray  # int64 [N]: continuations that ran out of tokens undecided
    generated_tokens: int = 0
    seconds: float = 0.0
    per_sample: np.ndarray | None = None  # float [N, samples]: each one's chance of the outcome
    decided_per_sample: np.ndarray | None = None  # bool [N, samples]: window closed
    max_new_tokens: int = 0
    reach_days: np.ndarray | None = None  # float [N, samples]: how far each clock got
    rejected: np.ndarray | None = None  # int64 [N]: contradicted the known history
    truncated_per_sample: np.ndarray | None = None  # bool [N, samples]: out of tokens
    rejected_per_sample: np.ndarray | None = None  # bool [N, samples]
    estimator: str = "expected"
    weights: np.ndarray | None = None  # float [N, samples]: chance of not leaving early

    @property
    def decided(self) -> np.ndarray:
        """int64 [N]: continuations whose window closed (outcome or not)."""
        rejected = 0 if self.rejected is None else self.rejected
        return self.samples - self.truncated - rejected

    def answer(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the weighted mean chance over decided continuations (NaN where none
        is decided or all weigh 0), the effective count (sum w)^2 / sum w^2 and the
        chance of having left before the prediction time (1 - mean weight; under
        rejection, the rejected share)."""
        w = self.weights
        wd = np.where(self.decided_per_sample, w, 0.0)
        total = wd.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(total > 0, (wd * self.per_sample).sum(1) / total, np.nan)
            effective = np.where(total > 0, total ** 2 / (wd ** 2).sum(1), 0.0)
        sampled = self.decided_per_sample | self.truncated_per_sample | self.rejected_per_sample
        stayed = np.where(sampled & ~self.rejected_per_sample, w, 0.0)
        left = 1.0 - stayed.sum(1) / np.maximum(sampled.sum(1), 1)
        return p, effective, left

    @classmethod
    def of(cls, hits: np.ndarray, truncated: np.ndarray, rejected: np.ndarray,
           reach: np.ndarray, decided: np.ndarray, weights: np.ndarray, *, samples: int,
           max_new_tokens: int, generated_tokens: int, seconds: float,
           estimator: str) -> Simulation:
        """From per-continuation arrays (bool/float [N, samples]); `hits` counts the
        decided continuations only."""
        hits = hits.astype(np.float64)
        return cls(np.where(decided, hits, 0.0).sum(1), samples,
                   truncated.sum(1).astype(np.int64), generated_tokens, seconds, hits,
                   decided, max_new_tokens, reach, rejected.sum(1).astype(np.int64),
                   truncated, rejected, estimator, weights)

    def merged(self, again: Simulation, redone: np.ndarray) -> Simulation:
        """This simulation with the continuations `redone` (bool [N, samples]) taken
        from `again`, a run of just those under a larger budget."""
        def pick(first: np.ndarray, second: np.ndarray) -> np.ndarray:
            return np.where(redone, second, first)
        return Simulation.of(
            pick(self.per_sample, again.per_sample),
            pick(self.truncated_per_sample, again.truncated_per_sample),
            pick(self.rejected_per_sample, again.rejected_per_sample),
            pick(self.reach_days, again.reach_days),
            pick(self.decided_per_sample, again.decided_per_sample),
            pick(self.weights, again.weights), samples=self.samples,
            max_new_tokens=again.max_new_tokens,
            generated_tokens=self.generated_tokens + again.generated_tokens,
            seconds=self.seconds + again.seconds, estimator=self.estimator)


@dataclass
class _Row:
    """State of one continuation while it is being generated."""

    prompt: int  # i: which prompt row it continues
    sample: int  # k: which stream of uniforms it reads
    base: float  # clock (in this row's time frame) of the last history event
    start: float  # window start, days after `base`
    end: float
    prefix: int
    generated: int = 0
    hit: bool = False
    decided: bool = False
    truncated: bool = False
    stop_at: float | None = None
    pending: int | None = None  # outcome code id waiting for its quantile token
    reach: float = 0.0  # days after `base` the clock reached
    known: float = 0.0  # days after `base` known to be empty (up to the prediction time)
    rejected: bool = False
    hazard: float = 0.0  # expected estimator: the outcome's probability summed over steps
    weight: float = 1.0  # weighted conditioning: the chance of not having left early


ESTIMATORS = ("expected", "counted")
CONDITIONINGS = ("rejection", "weighted")  # how the known stay is kept (module docstring)


def simulate(model, vocab: Vocabulary, prompts: Prompts, outcome: Outcome, otoks: OutcomeTokens,
             *, samples: int, seed: int = 0, max_new_tokens: int = 256, batch_rows: int = 256,
             temperature: float = 1.0, only: np.ndarray | None = None,
             estimator: str = "expected", conditioning: str = "rejection",
             progress: Callable[[int], None] | None = None) -> Simulation:
    """Generate `samples` continuations per prompt row and weigh the outcome in each
    (`estimator`: "expected", the chance of the outcome; "counted", 0 or 1;
    `conditioning`: how the known stay is kept, "weighted" or "rejection"; see the
    module docstring).

    The loop is `EHRModel.generate`'s (same context, clock and time-token rules),
    run incrementally through the model's own KV cache (`EHRModel.forward` with a
    `KVCache`), with one difference in sampling: continuation k draws its s-th
    token by inverse CDF from the uniform U[k, s] of one (seed)-seeded table,
    instead of from a generator shared by the batch. So continuation k of every
    prompt row reads the same random numbers whatever else is in the batch:
    answers do not depend on batching, and prompts that differ in one event
    (explain.py) are compared with common random numbers inside one batch. Each
    row stops as soon as its window is decided. The table is drawn step-major, so
    U[k, s] is the same for every `max_new_tokens`: a continuation sampled again
    under a larger budget repeats its first tokens exactly.

    `only` (bool [rows, samples]) samples just those continuations; the others are
    reported as neither hit nor decided (see `Simulation.merged`).
    """
    if max_new_tokens < 1 or samples < 1:  # no continuation could decide anything
        raise FedEHRError(f"need at least one continuation of at least one token (samples "
                          f"{samples}, max_new_tokens {max_new_tokens})", where="zero-shot",
                          fix="give --samples and --max-new-tokens of 1 or more")
    if estimator not in ESTIMATORS:
        raise FedEHRError(f"unknown estimator {estimator!r}", where="zero-shot",
                          fix=f"use one of {', '.join(ESTIMATORS)}")
    if conditioning not in CONDITIONINGS:
        raise FedEHRError(f"unknown conditioning {conditioning!r}", where="zero-shot",
                          fix=f"use one of {', '.join(CONDITIONINGS)}")
    expected = estimator == "expected" and temperature > 0  # greedy decoding has no chance
    started = time.perf_counter()
    uniforms = torch.rand(max_new_tokens, samples, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64).T
    offset_days = outcome.offset.total_seconds() / 86400.0
    horizon_days = outcome.horizon.total_seconds() / 86400.0
    rows: list[_Row] = []
    for i in range(len(prompts)):
        last = float(prompts.row(i)[1][-1])
        gap = float(prompts.gap_days[i])
        rows.extend(_Row(i, k, last, gap + offset_days, gap + horizon_days,
                         int(prompts.prefix_len[i]), known=gap) for k in range(samples)
                    if only is None or only[i, k])
    total = 0
    for lo in range(0, len(rows), batch_rows):
        group = list(range(lo, min(lo + batch_rows, len(rows))))
        total += _sample_group(model, vocab, prompts, rows, group, uniforms, otoks,
                               max_new_tokens, temperature, expected,
                               weighted=conditioning == "weighted")
        if progress is not None:
            progress(len(group))
    shape = (len(prompts), samples)
    truncated, rejected, sampled = (np.zeros(shape, dtype=bool) for _ in range(3))
    hits, reach, weights = (np.zeros(shape, dtype=np.float64) for _ in range(3))
    for r in rows:
        at = (r.prompt, r.sample)
        hits[at] = min(1.0, r.hazard) if expected else float(r.hit)
        truncated[at], rejected[at], reach[at] = r.truncated, r.rejected, r.reach
        sampled[at], weights[at] = True, r.weight
    return Simulation.of(hits, truncated, rejected, reach, sampled & ~(truncated | rejected),
                         weights, samples=samples, max_new_tokens=max_new_tokens,
                         generated_tokens=total, seconds=time.perf_counter() - started,
                         estimator="expected" if expected else "counted")


def _sample_group(model, vocab: Vocabulary, prompts: Prompts, rows: list[_Row], group: list[int],
                  uniforms: torch.Tensor, otoks: OutcomeTokens, max_new_tokens: int,
                  temperature: float, expected: bool, *, weighted: bool) -> int:
    """Sample the continuations `group` (indices into rows) until each is decided;
    `expected`: add up each step's chance of drawing the outcome; `weighted`: keep the
    known stay by masking and weights, not by rejection."""
    cfg = model.config
    max_len = cfg.max_len
    shift_block = max(1, min(32, max_len // 4))  # drop old events in blocks, not per token
    B = len(group)
    tok = torch.full((B, max_len), PAD_ID, dtype=torch.long)
    tim = torch.zeros(B, max_len, dtype=torch.float64)
    length = torch.zeros(B, dtype=torch.long)
    for j, g in enumerate(group):
        t, s = prompts.row(rows[g].prompt)
        n = min(len(t), max_len)
        tok[j, :n], tim[j, :n] = torch.from_numpy(t[:n]), torch.from_numpy(s[:n].astype(float))
        length[j] = n
    days_of = torch.zeros(cfg.vocab_size, dtype=torch.float64)
    for token_id, days in time_token_days(vocab).items():
        days_of[token_id] = days
    continuation = vocab.continuation_mask()
    masks = _OutcomeMasks.of(otoks, cfg.vocab_size) if expected else None
    leaving = None
    if weighted:  # what would contradict the known stay if drawn before the prediction time
        leaving = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        leaving[list(otoks.stop | otoks.terminal | otoks.codes)] = True
    was_training = model.training
    model.eval()
    cache = KVCache(cfg, B)
    everyone = torch.arange(B)
    W = int(length.max())
    logits = _fill(model, cache, everyone, tok[:, :W], tim[:, :W])
    generated = 0
    with torch.no_grad():
        for _step in range(max_new_tokens):
            live = [j for j, g in enumerate(group) if not rows[g].decided]
            if not live:
                break
            full = [j for j in live if int(length[j]) >= max_len]
            if full:  # make room, then refill those rows' caches and next-token logits
                for j in full:
                    _drop_oldest(rows[group[j]], tok, tim, length, j, shift_block, continuation)
                idx = torch.tensor(full)
                W = int(length[idx].max())
                cache.reset(idx)
                logits[idx] = _fill(model, cache, idx, tok[idx, :W], tim[idx, :W])
            idx = torch.tensor(live)
            step_logits = logits[idx].double()
            step_logits[:, PAD_ID] = float("-inf")
            live_rows = [rows[group[j]] for j in live]
            clocks = tim[idx, length[idx] - 1]
            if leaving is not None:
                _keep_the_stay(step_logits, live_rows, clocks, leaving, temperature)
            if masks is not None:
                _add_hazard(step_logits, live_rows, clocks, masks, temperature)
            nxt = _inverse_cdf(step_logits, temperature, uniforms, live_rows)
            clock = clocks + days_of[nxt]
            tok[idx, length[idx]] = nxt
            tim[idx, length[idx]] = clock
            length[idx] += 1
            generated += len(live)
            going = []
            for j, token, t in zip(live, nxt.tolist(), clock.tolist(), strict=True):
                row = rows[group[j]]
                row.generated += 1
                _scan(row, token, t, otoks)
                if row.generated >= max_new_tokens and not row.decided:
                    row.decided = row.truncated = True
                if not row.decided:
                    going.append(j)
            if going:
                idx = torch.tensor(going)
                at = length[idx] - 1
                hidden = model(tok[idx, at].unsqueeze(1), tim[idx, at].float().unsqueeze(1),
                               cache=cache, rows=idx)
                logits[idx] = model.logits(hidden[:, 0])
    model.train(was_training)
    return generated


@dataclass(frozen=True)
class _OutcomeMasks:
    """bool [V] masks of the tokens that make the outcome happen when drawn."""

    plain: torch.Tensor  # outcome codes without a value condition
    bins: dict[int, torch.Tensor]  # code with a condition -> its qualifying value bins

    @classmethod
    def of(cls, otoks: OutcomeTokens, vocab_size: int) -> _OutcomeMasks:
        def mask(ids) -> torch.Tensor:
            m = torch.zeros(vocab_size, dtype=torch.bool)
            m[list(ids)] = True
            return m
        return cls(mask(otoks.codes - set(otoks.value_bins)),
                   {c: mask(b) for c, b in otoks.value_bins.items()})

    def now(self, row: _Row, t: float) -> torch.Tensor | None:
        """What would be a hit if drawn at clock t (days after row.base), as `_scan`
        judges it; None where nothing would (outside the window, or against the history)."""
        if t < row.known or t < row.start or t > row.end or (
                row.stop_at is not None and t > row.stop_at):
            return None
        return self.plain if row.pending is None else self.plain | self.bins[row.pending]


def _keep_the_stay(logits: torch.Tensor, live: list[_Row], clocks: torch.Tensor,
                   leaving: torch.Tensor, temperature: float) -> None:
    """Rows whose clock is before the prediction time cannot draw a `leaving` token
    (masked in place); each such row's weight takes the chance it would have."""
    early = [n for n, row in enumerate(live) if float(clocks[n]) - row.base < row.known]
    if not early:
        return
    at = torch.tensor(early)
    if temperature > 0:
        chance = (torch.softmax(logits[at] / temperature, dim=-1) * leaving).sum(-1)
        for n, c in zip(early, chance.tolist(), strict=True):
            live[n].weight *= max(0.0, 1.0 - c)
    logits[at] = logits[at].masked_fill(leaving, float("-inf"))


def _add_hazard(logits: torch.Tensor, live: list[_Row], clocks: torch.Tensor,
                masks: _OutcomeMasks, temperature: float) -> None:
    """Add to each live row's hazard the probability that this step draws the outcome."""
    hit = torch.zeros_like(logits, dtype=torch.bool)
    for n, row in enumerate(live):
        now = masks.now(row, float(clocks[n]) - row.base)
        if now is not None:
            hit[n] = now
    if hit.any():
        chance = (torch.softmax(logits / temperature, dim=-1) * hit).sum(-1)
        for n, row in enumerate(live):
            row.hazard += float(chance[n])


@torch.no_grad()
def _fill(model, cache: KVCache, rows: torch.Tensor, tokens: torch.Tensor,
          times: torch.Tensor) -> torch.Tensor:
    """Feed right-padded contexts into empty cache rows; next-token logits [b, V]."""
    hidden = model(tokens, times.float(), cache=cache, rows=rows)
    return model.logits(last_position(hidden, tokens))


def _inverse_cdf(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor,
                 rows: list[_Row]) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
    u = torch.tensor([float(uniforms[r.sample, r.generated]) for r in rows],
                     dtype=cdf.dtype).unsqueeze(1)
    picked = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1)
    return picked.clamp(max=logits.shape[-1] - 1)


def _drop_oldest(row: _Row, tok: torch.Tensor, tim: torch.Tensor, length: torch.Tensor, j: int,
                 block: int, continuation: np.ndarray) -> None:
    """Make room in a full context: keep [BOS]+static and the latest events that leave
    `block` tokens free (cut by `window_span`, as every window), re-timed from the first
    kept token (as generate and the training windows do)."""
    n, p = int(length[j]), row.prefix
    cut, _, _ = window_span(tok[j].numpy(), 1, n, p - 1, n - block, continuation)
    cut = min(cut, n - 1)  # keep at least the last token
    shift = float(tim[j, cut])
    body_tok = tok[j, cut:n].clone()
    body_tim = tim[j, cut:n] - shift
    m = p + len(body_tok)
    tok[j, p:m], tim[j, p:m] = body_tok, body_tim
    tok[j, m:], tim[j, m:] = PAD_ID, 0.0
    length[j] = m
    row.base -= shift
    if row.stop_at is not None:
        row.stop_at -= shift


def _scan(row: _Row, tok: int, t_abs: float, otoks: OutcomeTokens) -> None:
    """Advance one continuation by one generated token (see the module docstring)."""
    t = t_abs - row.base  # days after the last history event
    row.reach = t
    if t < row.known and (tok in otoks.stop or tok in otoks.terminal or tok in otoks.codes):
        # a discharge, death or the outcome before the prediction time contradicts the
        # history (nothing happened between its last event and the prediction time)
        row.rejected = row.decided = True
        return
    if row.stop_at is not None and t > row.stop_at:
        row.decided = True  # the window closed at the stop event's time
        return
    if t > row.end:
        row.decided = True
        return
    if row.pending is not None:
        if tok in otoks.value_bins.get(row.pending, ()):
            row.hit = row.decided = True
            return
        row.pending = None
    if tok in otoks.codes and t >= row.start:
        if tok in otoks.value_bins:
            row.pending = tok
        else:
            row.hit = row.decided = True
            return
    if tok in otoks.terminal:  # death or the end of the record: nothing can follow
        row.decided = True
        return
    if tok in otoks.stop and t >= row.start and row.stop_at is None:
        row.stop_at = t


# -- intervals and the public entry point -------------------------------------------------

def wilson_interval(hits: np.ndarray, n: np.ndarray | int,
                    z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for hits/n (95 % by default); NaN where n is 0."""
    hits = np.asarray(hits, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), hits.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = hits / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        low = np.where(hits == 0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exact at the ends
        high = np.where(hits == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def open_dataset(dataset: MEDSDataset | str | Path) -> MEDSDataset:
    return dataset if isinstance(dataset, MEDSDataset) else MEDSDataset.open(dataset)


def candidate_codes(dataset: MEDSDataset, vocab: Vocabulary) -> list[str]:
    """Codes an outcome pattern may match: the dataset's codes.parquet and vocabulary tokens."""
    codes = dataset.codes()
    listed = codes["code"].to_list() if not codes.is_empty() else []
    return list(dict.fromkeys([*listed, *vocab.tokens]))


def predict(model, vocab: Vocabulary, dataset: MEDSDataset | str | Path, labels: pl.DataFrame,
            outcome: Outcome, *, samples: int = 32, seed: int = 0, batch_size: int = 256,
            mapping: CodeMapping | None = None, max_new_tokens: int | None = None,
            estimator: str = "expected", conditioning: str = "rejection",
            progress: Callable[[int], None] | None = None) -> pl.DataFrame:
    """Zero-shot probability of `outcome` for each (subject_id, prediction_time) of `labels`
    (MEDS label schema). Returns subject_id, prediction_time, probability, ci_low, ci_high
    in the order of `labels`. `batch_size` counts generated rows (patients x samples).
    The probability is over the decided continuations (NaN when none decided)."""
    result = predict_detailed(model, vocab, dataset, labels, outcome, samples=samples,
                              seed=seed, batch_size=batch_size, mapping=mapping,
                              max_new_tokens=max_new_tokens, estimator=estimator,
                              conditioning=conditioning, progress=progress)
    return result.frame.select(S.SUBJECT_ID, "prediction_time", "probability", "ci_low",
                               "ci_high")


@dataclass
class Prediction:
    frame: pl.DataFrame  # + hits, samples, decided, truncated (undecided)
    outcome_tokens: OutcomeTokens
    simulation: Simulation
    prompts: Prompts

    @property
    def patients_per_second(self) -> float:
        return self.frame.height / max(self.simulation.seconds, 1e-9)


def predict_detailed(model, vocab: Vocabulary, dataset: MEDSDataset | str | Path,
                     labels: pl.DataFrame, outcome: Outcome, *, samples: int = 32, seed: int = 0,
                     batch_size: int = 256, mapping: CodeMapping | None = None,
                     max_new_tokens: int | None = None, estimator: str = "expected",
                     conditioning: str = "rejection",
                     progress: Callable[[int], None] | None = None) -> Prediction:
    """As `predict`, with the counts: `hits` (expected continuations with the outcome,
    unweighted; whole numbers when `estimator` is "counted") of `decided` continuations
    (their window closed), `truncated` (ran out of tokens) and `rejected` (contradicted
    the known stay, under "rejection" conditioning), both excluded from the probability;
    `effective`, the decided continuations' effective count under their weights, and
    `left_early`, the model's chance that the patient had left before the prediction
    time. `max_new_tokens` None: `token_budget` from the horizon and the data."""
    if samples < 1:
        raise FedEHRError("samples must be at least 1", where="samples", fix="use e.g. 32")
    if max_new_tokens is not None and max_new_tokens < 1:  # nothing could be decided
        raise FedEHRError("max_new_tokens must be at least 1", where="max_new_tokens",
                          fix="leave it out (read from the horizon) or give e.g. 256")
    for col in (S.SUBJECT_ID, PREDICTION_TIME):
        if col not in labels.columns:
            raise DataError(f"labels lack the column {col}", where="labels",
                            fix="give a frame in the MEDS label schema")
    dataset = open_dataset(dataset)
    codes = dataset.codes()
    mapping = mapping or CodeMapping.from_config(None, codes)
    otoks = outcome_tokens(outcome, vocab, mapping, candidate_codes(dataset, vocab))
    subjects = labels[S.SUBJECT_ID].cast(pl.Int64).to_list()
    at = labels[PREDICTION_TIME].cast(pl.Datetime("us")).to_list()
    prompts = build_prompts(dataset, vocab, mapping, model.config.max_len, labels)
    derived = max_new_tokens is None
    if derived:
        max_new_tokens = token_budget(dataset, vocab, mapping, outcome, otoks)
    sim = simulate(model, vocab, prompts, outcome, otoks, samples=samples, seed=seed,
                   max_new_tokens=max_new_tokens, batch_rows=batch_size, estimator=estimator,
                   conditioning=conditioning, progress=progress)
    for _ in range(MAX_WIDER_PASSES if derived else 0):
        # the model's clock may run slower than the data's: measure its pace, and redo
        # only the undecided (the others would repeat themselves token for token)
        wider = model_budget(sim, prompts, outcome)
        if wider <= sim.max_new_tokens:
            break
        redo = sim.truncated_per_sample
        again = simulate(model, vocab, prompts, outcome, otoks, samples=samples, seed=seed,
                         max_new_tokens=wider, batch_rows=batch_size, only=redo,
                         estimator=estimator, conditioning=conditioning, progress=progress)
        sim = sim.merged(again, redo)
    probability, effective, left_early = sim.answer()
    low, high = wilson_interval(np.nan_to_num(probability) * effective, effective)
    frame = pl.DataFrame({
        S.SUBJECT_ID: pl.Series(subjects, dtype=pl.Int64),
        PREDICTION_TIME: pl.Series(at, dtype=pl.Datetime("us")),
        "probability": probability, "ci_low": low, "ci_high": high,
        "hits": sim.hits, "samples": np.full(len(subjects), samples),
        "decided": sim.decided, "truncated": sim.truncated, "rejected": sim.rejected,
        "effective": effective, "left_early": left_early,
    }, nan_to_null=False)
    return Prediction(frame, otoks, sim, prompts)
