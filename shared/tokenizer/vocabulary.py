"""The shared vocabulary: which token id stands for which code, value bin or time gap.

"Everything is a token", as in ETHOS (Renc et al., 2024, "Zero shot health
trajectory prediction using transformer"), CEHR-GPT (Pang et al., 2024) and
MEDS_EIC_AR (McDermott et al.):

* special tokens: ``[PAD]`` (id 0 = `PAD_ID`), ``[BOS]``, ``[EOS]``,
  ``[UNK]``, ``[MASK]``, and the modality markers ``[NOTE]`` and ``[IMAGE]``
  (a note or image event is its code token followed by the marker; the marker's
  position carries the frozen-encoder vector) and ``[PRO]`` (reserved for the
  PRO contrastive head; PRO answers themselves are code + quantile tokens);
* static tokens: the patient's static codes (``GENDER//F`` ...) and an age
  bucket ``AGE//40-44`` (5-year buckets, ``AGE//90+``), ETHOS style;
* code tokens: standard codes after `mapping.CodeMapping` (``LOINC/2160-0//mg/dL``,
  ``ICD10CM/I50.9`` ...);
* ten shared quantile tokens ``Q0`` .. ``Q9``: a numeric event is its code token
  followed by the quantile token of its value under that code's own bin edges
  (ETHOS, MEDS_EIC_AR);
* optionally (`Vocabulary.with_value_tokens`), joint value tokens
  ``LOINC/2160-0//mg/dL//Q7``: one token per value bin of each numeric code, written
  in place of the code token and its quantile token, so that a value means
  something on its own instead of through a binding the model must learn;
* time-interval tokens ``TIME//5m-15m`` .. ``TIME//1y+`` (17, log-spaced, as
  CEHR-GPT's artificial time tokens) placed before an event when the gap since
  the previous event is at least 5 minutes.

Rare codes fold into an ancestor (a ``parent_codes`` entry from codes.parquet, or
the ICD hierarchy by truncation: ``ICD10CM/I50.92 -> ICD10CM/I50.9 -> ICD10CM/I50``)
until the pooled count reaches `min_count`; what still falls short becomes
``[UNK]``. The vocabulary is saved as canonical JSON; its content hash (SHA-256
of that JSON) names it in caches and model cards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedehr.shared.atomic import write_text
from fedehr.shared.errors import DataError

FORMAT_VERSION = 1

PAD, BOS, EOS, UNK, MASK = "[PAD]", "[BOS]", "[EOS]", "[UNK]", "[MASK]"
NOTE, IMAGE, PRO = "[NOTE]", "[IMAGE]", "[PRO]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, MASK, NOTE, IMAGE, PRO)
PAD_ID = SPECIAL_TOKENS.index(PAD)  # 0; defined here, not in batch.py, to keep torch out

N_QUANTILES = 10
QUANTILE_TOKENS = tuple(f"Q{i}" for i in range(N_QUANTILES))


def value_token(code: str, quantile: int) -> str:
    """The joint token of a numeric code's value bin (``LOINC/2160-0//mg/dL//Q7``)."""
    return f"{code}//{QUANTILE_TOKENS[quantile]}"

_MIN = 1.0 / (24 * 60)  # one minute, in days
# Lower edges (days) of the time-interval buckets; the last bucket is open-ended.
TIME_EDGES_DAYS: tuple[float, ...] = (
    5 * _MIN, 15 * _MIN, 30 * _MIN, 1 / 24, 2 / 24, 4 / 24, 8 / 24, 12 / 24,
    1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 91.0, 182.0, 365.0,
)
_TIME_LABELS = ("5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "2d", "4d",
                "1w", "2w", "1mo", "3mo", "6mo", "1y")
TIME_TOKENS = tuple(
    f"TIME//{lo}-{hi}" for lo, hi in zip(_TIME_LABELS[:-1], _TIME_LABELS[1:], strict=True)
) + (f"TIME//{_TIME_LABELS[-1]}+",)

AGE_BUCKET_YEARS = 5
AGE_MAX_BUCKET = 18  # 90+
AGE_TOKENS = tuple(
    f"AGE//{i * AGE_BUCKET_YEARS}-{i * AGE_BUCKET_YEARS + AGE_BUCKET_YEARS - 1}"
    for i in range(AGE_MAX_BUCKET)
) + (f"AGE//{AGE_MAX_BUCKET * AGE_BUCKET_YEARS}+",)
STATIC_TOKENS = ("GENDER//F", "GENDER//M", "GENDER//UNK")

PRO_PREFIX = "PRO//"

_ICD_RE = re.compile(r"^(ICD(?:9|10)CM/)([A-Z0-9]{3,})(?:\.([A-Z0-9]*))?$")


def icd_parent(code: str) -> str | None:
    """The next coarser ICD-CM code by truncation (``I50.92 -> I50.9 -> I50``), else None."""
    match = _ICD_RE.match(code)
    if not match or match.group(3) is None:
        return None
    prefix, category, sub = match.groups()
    if len(sub) > 1:
        return f"{prefix}{category}.{sub[:-1]}"
    return f"{prefix}{category}"


def time_bucket(gap_days: np.ndarray, edges: tuple[float, ...] = TIME_EDGES_DAYS) -> np.ndarray:
    """Index into TIME_TOKENS for each gap, or -1 for gaps under the smallest edge (5 min)."""
    return np.searchsorted(np.asarray(edges), gap_days, side="right") - 1


def age_bucket(age_years: np.ndarray) -> np.ndarray:
    """Index into AGE_TOKENS (5-year buckets, 90+ last; negative ages clip to 0)."""
    idx = np.floor(np.asarray(age_years, dtype=np.float64) / AGE_BUCKET_YEARS)
    return np.clip(np.nan_to_num(idx, nan=0.0), 0, AGE_MAX_BUCKET).astype(np.int64)


def quantile_edges(values: np.ndarray, n_bins: int = N_QUANTILES) -> list[float]:
    """The n_bins-1 inner edges that split `values` into equal-frequency bins."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    qs = np.quantile(values, np.arange(1, n_bins) / n_bins)
    return [float(q) for q in qs]


@dataclass
class Vocabulary:
    """Token strings in id order, per-code value bin edges and the rare-code fold map."""

    tokens: list[str]
    bin_edges: dict[str, list[float]] = field(default_factory=dict)
    fold: dict[str, str] = field(default_factory=dict)
    time_edges_days: tuple[float, ...] = TIME_EDGES_DAYS
    _index: dict[str, int] = field(init=False, repr=False)
    value_token_ids: dict[str, list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {tok: i for i, tok in enumerate(self.tokens)}
        # code -> the ids of its joint value tokens: position q holds bin q's token
        self.value_token_ids = {code: ids for code in self.bin_edges
                                if (ids := self._value_bin_ids(code))}
        if len(self._index) != len(self.tokens):
            raise DataError("vocabulary has duplicate tokens", fix="rebuild the vocabulary")
        for tok in SPECIAL_TOKENS:
            if tok not in self._index:
                raise DataError(f"vocabulary lacks the special token {tok}",
                                fix="rebuild the vocabulary with this fedehr version")
        if self._index[PAD] != PAD_ID:
            raise DataError(f"{PAD} must have id {PAD_ID}", fix="rebuild the vocabulary")
        n_time = sum(t.startswith("TIME//") for t in self.tokens)
        if n_time != len(self.time_edges_days) or any(t not in self._index for t in TIME_TOKENS):
            raise DataError("time tokens and time edges disagree", fix="rebuild the vocabulary")

    def _value_bin_ids(self, code: str) -> list[int]:
        """Bins 0, 1, ... of `code` up to the first without a joint token: an index
        into the list is always the bin's number."""
        ids = []
        for q in range(N_QUANTILES):
            token = value_token(code, q)
            if token not in self._index:
                break
            ids.append(self._index[token])
        return ids

    # -- construction ----------------------------------------------------------
    @classmethod
    def build(
        cls,
        counts: Mapping[str, float],
        *,
        min_count: float,
        parents: Mapping[str, Iterable[str]] | None = None,
        bin_edges: Mapping[str, list[float]] | None = None,
    ) -> Vocabulary:
        """Keep codes counted at least `min_count` times; fold the rest into ancestors.

        `counts` are (noisy or exact) patient counts of standard codes. A code under
        `min_count` adds its count to its first ancestor (`parents`, then ICD
        truncation) and is mapped there; folding repeats up the hierarchy, so a
        group of rare siblings can keep their parent. Codes with no ancestor
        that qualifies map to ``[UNK]`` (they are simply left out).
        """
        parents = {k: list(v) for k, v in (parents or {}).items()}
        pooled: dict[str, float] = {c: float(n) for c, n in counts.items() if n > 0}

        def parent_of(code: str) -> str | None:
            for p in parents.get(code, ()):
                if p != code:
                    return p
            return icd_parent(code)

        # Fold bottom-up: deepest codes (longest strings) first, so children pool
        # into a parent before the parent is judged.
        pointer: dict[str, str] = {}
        for code in sorted(pooled, key=lambda c: (-len(c), c)):
            if pooled[code] >= min_count:
                continue
            parent = parent_of(code)
            if parent is None or parent == code:
                continue
            pooled[parent] = pooled.get(parent, 0.0) + pooled[code]
            pointer[code] = parent
        fixed = set(SPECIAL_TOKENS) | set(QUANTILE_TOKENS) | set(TIME_TOKENS)
        fixed |= set(AGE_TOKENS) | set(STATIC_TOKENS)
        kept = sorted(c for c, n in pooled.items() if n >= min_count and c not in fixed)
        kept_set = set(kept)
        fold: dict[str, str] = {}
        for code in pointer:
            target, seen = pointer[code], {code}
            while target not in kept_set and target in pointer and target not in seen:
                seen.add(target)
                target = pointer[target]
            if target in kept_set:
                fold[code] = target
        tokens = (list(SPECIAL_TOKENS) + list(QUANTILE_TOKENS) + list(TIME_TOKENS)
                  + list(AGE_TOKENS) + list(STATIC_TOKENS) + kept)
        edges = {c: list(e) for c, e in (bin_edges or {}).items() if c in kept_set and e}
        return cls(tokens=tokens, bin_edges=edges, fold=fold)

    def with_value_tokens(self) -> Vocabulary:
        """This vocabulary with the joint value tokens of every numeric code appended.

        The codes' own tokens stay (an event without a value still needs one), and no
        count is released for the new tokens: they follow from the kept codes and their
        bin edges, which are already public.
        """
        new = [value_token(code, q) for code in sorted(self.bin_edges)
               for q in range(min(len(self.bin_edges[code]) + 1, N_QUANTILES))]
        return Vocabulary(tokens=self.tokens + [t for t in new if t not in self._index],
                          bin_edges=self.bin_edges, fold=self.fold,
                          time_edges_days=self.time_edges_days)

    # -- lookups ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        return self._index[token]

    @property
    def unk_id(self) -> int:
        return self._index[UNK]

    def resolve(self, code: str) -> str:
        """The token a (mapped) code is written as: itself, its fold target, an ICD
        ancestor in the vocabulary, or ``[UNK]``."""
        if code in self._index:
            return code
        if code in self.fold:
            return self.fold[code]
        parent = icd_parent(code)
        while parent is not None:
            if parent in self._index:
                return parent
            if parent in self.fold:
                return self.fold[parent]
            parent = icd_parent(parent)
        return UNK

    def lookup(self, codes: Iterable[str]) -> np.ndarray:
        """Token ids (int32) for codes, resolving folds and unknowns."""
        return np.fromiter((self._index[self.resolve(c)] for c in codes), dtype=np.int32)

    @property
    def pro_codes(self) -> list[str]:
        """Code tokens of patient-reported outcomes, in id order (the P axis of a batch)."""
        return [t for t in self.tokens if t.startswith(PRO_PREFIX)]

    def continuation_mask(self) -> np.ndarray:
        """bool[V]: tokens that only make sense right after a code (quantiles, markers)."""
        mask = np.zeros(len(self.tokens), dtype=bool)
        for tok in (*QUANTILE_TOKENS, NOTE, IMAGE):
            mask[self._index[tok]] = True
        return mask

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": "fedehr-vocabulary",
            "version": FORMAT_VERSION,
            "tokens": list(self.tokens),
            "bin_edges": {c: [float(x) for x in e] for c, e in sorted(self.bin_edges.items())},
            "fold": dict(sorted(self.fold.items())),
            "time_edges_days": [float(x) for x in self.time_edges_days],
        }

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON: equal content gives equal hashes."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_json(self, path: str | os.PathLike) -> None:
        write_text(path, self.canonical_json() + "\n")

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "vocabulary") -> Vocabulary:
        if not isinstance(data, Mapping) or data.get("format") != "fedehr-vocabulary" \
                or data.get("version") != FORMAT_VERSION:
            raise DataError("not a fedehr vocabulary of a supported version", where=where,
                            fix="rebuild the vocabulary with this fedehr version")
        problem = _schema_problem(data)
        if problem:  # a vocabulary may come from another party (a pulled checkpoint)
            raise DataError(f"vocabulary field {problem}", where=where,
                            fix="rebuild or fetch the vocabulary again")
        edges = tuple(float(x) for x in data["time_edges_days"])
        if not all(math.isfinite(x) for x in edges):
            raise DataError("time edges must be finite", where=where, fix="rebuild the vocabulary")
        return cls(tokens=list(data["tokens"]),
                   bin_edges={c: list(map(float, e)) for c, e in data["bin_edges"].items()},
                   fold=dict(data["fold"]), time_edges_days=edges)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError("no such vocabulary file", where=str(path),
                            fix="run the vocabulary round or give the right path") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", where=str(path),
                            fix="fetch the vocabulary again") from None
        return cls.from_dict(data, where=str(path))


def _schema_problem(data: Mapping) -> str | None:
    """What is wrong with the types of a vocabulary file's fields, or None."""
    def numbers(value) -> bool:
        return isinstance(value, list) and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value)

    checks = {
        "tokens": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
                   "a list of token strings"),
        "bin_edges": (lambda v: isinstance(v, dict) and all(numbers(e) for e in v.values()),
                      "an object of code -> list of numbers"),
        "fold": (lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values()),
                 "an object of code -> code"),
        "time_edges_days": (numbers, "a list of numbers"),
    }
    for name, (ok, what) in checks.items():
        if name not in data:
            return f"'{name}' is missing"
        if not ok(data[name]):
            return f"'{name}' must be {what}"
    return None
