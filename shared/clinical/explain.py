"""Which history events moved a zero-shot answer: leave a group out, regenerate, compare.

Occlusion, the simplest attribution that needs nothing from the model but its
sampler: for each group of history events (all occurrences of one code token,
with their value tokens) the prompt is rebuilt without the group and the same
number of continuations is sampled again. The group's influence is
p(full history) - p(without the group): positive when the events raised the
probability.

Sampling noise would swamp small differences, so every run uses common random
numbers: the same generator seed and the same row layout, so continuation k of
the full history and continuation k without a group start from the same
random draws and diverge only where the history changed the model's
distribution. The reported standard error is that of the paired difference
(per-continuation hit with minus without, over k). Continuations that ran out
of tokens undecided (zero_shot.py) have no outcome to compare: a pair counts
only when both of its continuations were decided. Groups are the static codes
and the code tokens of the history window; with more groups than `max_groups`
the most recent ones are tried.

A change of exactly 0 for every group is no explanation: it happens when no
decided continuation holds the outcome with or without any group (p = 0, a
rare outcome at K continuations), and `Explanation.moved` is then empty; the
caller says so instead of printing a column of zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedehr.shared.clinical.concepts import CodeIndex
from fedehr.shared.clinical.query import Outcome
from fedehr.shared.clinical.zero_shot import OutcomeTokens, Prompts, simulate
from fedehr.shared.tokenizer.batch import PAD_ID
from fedehr.shared.tokenizer.vocabulary import QUANTILE_TOKENS, TIME_TOKENS, Vocabulary

MOVED = 0.0005  # a change that rounds to 0.000 moved nothing a reader can see
# A change counts as beyond the sampling noise when it exceeds this many standard errors
# (about 95 % two-sided for one group; with several groups tried some pass by chance)
CLEAR_SE = 2.0


@dataclass(frozen=True)
class Influence:
    token: str
    description: str
    occurrences: int
    probability_without: float
    delta: float  # p(full) - p(without this group)
    stderr: float
    pairs: int = 0  # continuation pairs decided with and without the group

    @property
    def beyond_noise(self) -> bool:
        """The change exceeds CLEAR_SE standard errors of its continuation pairs."""
        return bool(abs(self.delta) > CLEAR_SE * self.stderr)

    def words(self) -> str:
        direction = "raised" if self.delta > 0 else "lowered"
        times = f" (x{self.occurrences})" if self.occurrences > 1 else ""
        return f"{self.description}{times} {direction} it by {abs(self.delta):.3f}"


@dataclass
class Explanation:
    probability: float
    influences: list[Influence]  # sorted by |delta|, largest first
    samples: int
    groups_tried: int
    seconds: float
    decided: int = 0  # continuations of the full history that were decided

    @property
    def moved(self) -> list[Influence]:
        """The groups whose removal moved the probability by MOVED or more."""
        return [i for i in self.influences if abs(i.delta) >= MOVED]

    def noise_words(self, shown: int) -> str:
        """How many of the first `shown` moved groups lie beyond the sampling noise, in words
        a reader of the table needs: a change within noise is no evidence either way."""
        clear = sum(i.beyond_noise for i in self.moved[:shown])
        n = min(shown, len(self.moved))
        if clear == n == 1:
            return "The change shown exceeds twice its standard error."
        if clear == n:
            return f"All {n} changes shown exceed twice their standard error."
        if clear:
            verb = "exceeds twice its" if clear == 1 else "exceed twice their"
            return (f"{clear} of the {n} changes shown {verb} standard error; the others are "
                    "within the sampling noise.")
        return ("None of these changes exceeds twice its standard error: at this number of "
                "continuations no event measurably moves the answer; ask with more "
                "continuations to tell.")


def event_groups(tokens: np.ndarray, prefix_len: int, vocab: Vocabulary,
                 max_groups: int) -> dict[int, list[int]]:
    """token id -> positions of its occurrences (code tokens and static tokens)."""
    skip = {vocab.id(t) for t in (*TIME_TOKENS, *QUANTILE_TOKENS)}
    skip |= set(np.flatnonzero(vocab.continuation_mask()).tolist())
    skip.add(PAD_ID)
    groups: dict[int, list[int]] = {}
    last_seen: dict[int, int] = {}
    for pos in range(1, len(tokens)):  # position 0 is [BOS]
        tok = int(tokens[pos])
        if tok in skip:
            continue
        groups.setdefault(tok, []).append(pos)
        last_seen[tok] = pos
    recent = sorted(groups, key=lambda t: -last_seen[t])[:max_groups]
    return {t: groups[t] for t in recent}


def without(tokens: np.ndarray, times: np.ndarray, positions: list[int], prefix_len: int,
            vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, int]:
    """The prompt without the events at `positions` (and their value tokens); time tokens
    left with no event after them are dropped too."""
    continuation = vocab.continuation_mask()
    time_ids = {vocab.id(t) for t in TIME_TOKENS}
    drop = set(positions)
    for pos in positions:
        nxt = pos + 1
        if nxt < len(tokens) and continuation[tokens[nxt]]:
            drop.add(nxt)
    keep = [i for i in range(len(tokens)) if i not in drop]
    cleaned: list[int] = []
    for k, i in enumerate(keep):
        is_time = int(tokens[i]) in time_ids
        next_is_time_or_end = k + 1 == len(keep) or int(tokens[keep[k + 1]]) in time_ids
        if is_time and next_is_time_or_end:
            continue
        cleaned.append(i)
    new_prefix = prefix_len - sum(1 for p in drop if p < prefix_len)
    return tokens[cleaned], times[cleaned], new_prefix


def explain(model, vocab: Vocabulary, prompts: Prompts, row: int, outcome: Outcome,
            otoks: OutcomeTokens, index: CodeIndex, *, samples: int, seed: int = 0,
            max_groups: int = 12, max_new_tokens: int = 256, batch_rows: int = 512,
            progress: Callable[[int], None] | None = None) -> Explanation:
    """Influence of each history event group on prompt `row`'s answer."""
    import time

    started = time.perf_counter()
    tokens, times = prompts.row(row)
    prefix = int(prompts.prefix_len[row])
    gap = float(prompts.gap_days[row])
    groups = event_groups(tokens, prefix, vocab, max_groups)
    variants = [(tokens, times, gap, prefix)]
    for positions in groups.values():
        t2, s2, p2 = without(tokens, times, positions, prefix, vocab)
        # the clock of the last history event moves when the last event is left out
        gap2 = gap + float(times[-1] - s2[-1])
        if len(s2) > p2:  # times restart at the window's first event, as in training
            s2 = np.concatenate([s2[:p2], s2[p2:] - s2[p2]])
        variants.append((t2, s2, gap2, p2))
    # one batch: continuation k of every variant reads the same uniforms (simulate)
    sim = simulate(model, vocab, _stack(variants), outcome, otoks, samples=samples, seed=seed,
                   max_new_tokens=max_new_tokens, batch_rows=batch_rows,
                   progress=progress)
    hits, decided = sim.per_sample, sim.decided_per_sample
    influences = []
    for v, (tok, positions) in enumerate(groups.items(), start=1):
        both = decided[0] & decided[v]
        n = int(both.sum())
        diff = hits[0][both].astype(np.float64) - hits[v][both].astype(np.float64)
        delta = float(diff.mean()) if n else 0.0
        stderr = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        p_without = float(hits[v][decided[v]].mean()) if decided[v].any() else float("nan")
        name = vocab.tokens[tok]
        influences.append(Influence(name, index.describe(name), len(positions), p_without,
                                    delta, stderr, n))
    influences.sort(key=lambda i: (-abs(i.delta), i.token))
    p_full = float(hits[0][decided[0]].mean()) if decided[0].any() else float("nan")
    return Explanation(p_full, influences, samples, len(groups),
                       time.perf_counter() - started, int(decided[0].sum()))


def _stack(variants: list[tuple[np.ndarray, np.ndarray, float, int]]) -> Prompts:
    width = max(len(t) for t, *_ in variants)
    tokens = torch.full((len(variants), width), PAD_ID, dtype=torch.long)
    times = torch.zeros(len(variants), width)
    for i, (t, s, _, _) in enumerate(variants):
        tokens[i, :len(t)] = torch.from_numpy(t.astype(np.int64))
        times[i, :len(s)] = torch.from_numpy(s.astype(np.float32))
    return Prompts(tokens, times, np.array([v[2] for v in variants]),
                   np.array([v[3] for v in variants], dtype=np.int64))
