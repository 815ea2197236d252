"""What is in a MEDS dataset: counts, coverage, time span, code families, per split.

`compute_stats(root)` runs a handful of polars lazy queries over the shards
(together, with `pl.collect_all`, so shared scans are read once) and returns a
plain `DatasetStats` that prints as a rich table (`render`), converts to JSON
(`DatasetStats.to_dict`), and plots to a PNG (`plot_stats`).

Definitions:

- events: rows in the data shards, static rows (null ``time``) included.
- codes: distinct ``code`` strings in the data (not the rows of codes.parquet).
- code prefix: the part of a code before its first ``//``, or before its first
  ``/`` when what precedes it is an upper-case token (``LAB//50912//mg/dL`` and
  ``LAB/50912`` both give ``LAB``); any other code is its own prefix, so a
  label such as ``BMI (kg/m2)`` stays whole. This groups codes by family
  without knowing an ETL's exact code strings.
- numeric / text coverage: share of events whose ``numeric_value`` /
  ``text_value`` is not null (NaN counts as present).
- splits: the ``data/<split>/`` folder a shard sits in. Shards directly under
  ``data/`` count in the totals but in no split.
- vocabulary coverage (`vocabulary_coverage`, issue 19): the share of events whose code,
  after the parent mapping through codes.parquet (`tokenizer.mapping.coverage`), resolves
  to a token of a vocabulary other than ``[UNK]``; lab events are those coded ``LAB//...``
  or mapped to a ``LOINC/`` code. The vocabulary is a given vocabulary JSON or the
  anchor's, built as the federation builds its anchor part (exact patient counts of the
  anchor's train split after mapping, `DEFAULT_MIN_COUNT`). Below `COVERAGE_WARNING` the
  site's events are mostly ``[UNK]`` for the model, and `render` says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset

TOP_CODES = 20
COVERAGE_WARNING = 0.80  # below this share of events in the vocabulary, warn
DEFAULT_MIN_COUNT = 10  # the server's default vocabulary.min_count
LAB_PREFIXES = ("LAB//",)
LAB_STANDARD = "LOINC/"
HIST_BINS = 30
# Before the first "//"; failing that, before a first "/" that follows an upper-case
# token ("LAB/50912" -> "LAB"); otherwise the whole code ("BMI (kg/m2)" stays whole).
PREFIX_EXPR = (
    pl.when(pl.col(S.CODE).str.contains("//", literal=True))
    .then(pl.col(S.CODE).str.split("//").list.first())
    .otherwise(
        pl.coalesce(pl.col(S.CODE).str.extract(r"^([A-Z0-9_]+)/"), pl.col(S.CODE))
    )
)


@dataclass(frozen=True)
class Distribution:
    """Summary of events per subject, with a log-spaced histogram for plotting."""

    min: int
    p25: float
    median: float
    p75: float
    p95: float
    max: int
    mean: float
    bin_edges: list[float] = field(default_factory=list)
    bin_counts: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution:
        if not len(values):
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
        q = np.quantile(values, [0.25, 0.5, 0.75, 0.95])
        lo, hi = max(int(values.min()), 1), max(int(values.max()), 1)
        edges = np.geomspace(lo, hi + 1, HIST_BINS + 1) if hi > lo else np.array([lo, lo + 1.0])
        counts, _ = np.histogram(values, bins=edges)
        return cls(int(values.min()), float(q[0]), float(q[1]), float(q[2]), float(q[3]),
                   int(values.max()), float(values.mean()),
                   [float(e) for e in edges], [int(c) for c in counts])


@dataclass(frozen=True)
class SplitStats:
    """Counts for one split (or for the whole dataset)."""

    subjects: int
    events: int
    codes: int
    static_events: int
    numeric_coverage: float
    text_coverage: float
    time_min: datetime | None
    time_max: datetime | None


@dataclass(frozen=True)
class PrefixStats:
    prefix: str
    codes: int
    events: int


@dataclass(frozen=True)
class DatasetStats:
    root: str
    name: str | None
    total: SplitStats
    splits: dict[str, SplitStats]
    prefixes: list[PrefixStats]  # most events first
    top_codes: list[tuple[str, int]]  # (code, events), most events first
    events_per_subject: Distribution
    codes_in_metadata: int
    seconds: float

    # Shortcuts for the figures people ask for first.
    @property
    def subjects(self) -> int:
        return self.total.subjects

    @property
    def events(self) -> int:
        return self.total.events

    @property
    def codes(self) -> int:
        return self.total.codes

    def to_dict(self) -> dict:
        """JSON-ready: datetimes as ISO strings."""

        def fix(obj):
            if isinstance(obj, datetime):
                return obj.isoformat()
            if isinstance(obj, dict):
                return {k: fix(v) for k, v in obj.items()}
            if isinstance(obj, list | tuple):
                return [fix(v) for v in obj]
            return obj

        return fix(asdict(self))


def _split_query(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.select(
        pl.col(S.SUBJECT_ID).n_unique().alias("subjects"),
        pl.len().alias("events"),
        pl.col(S.CODE).n_unique().alias("codes"),
        pl.col(S.TIME).is_null().sum().alias("static_events"),
        pl.col(S.NUMERIC_VALUE).is_not_null().sum().alias("numeric"),
        pl.col(S.TEXT_VALUE).is_not_null().sum().alias("text"),
        pl.col(S.TIME).min().alias("time_min"),
        pl.col(S.TIME).max().alias("time_max"),
    )


def _split_stats(row: dict) -> SplitStats:
    events = int(row["events"])
    return SplitStats(
        subjects=int(row["subjects"]),
        events=events,
        codes=int(row["codes"]),
        static_events=int(row["static_events"]),
        numeric_coverage=row["numeric"] / events if events else 0.0,
        text_coverage=row["text"] / events if events else 0.0,
        time_min=row["time_min"],
        time_max=row["time_max"],
    )


def compute_stats(root: str | Path) -> DatasetStats:
    """Counts, coverage and distributions of the MEDS dataset at `root`.

    Raises DataError when `root` is not a MEDS dataset (see MEDSDataset.open).
    """
    import time

    start = time.perf_counter()
    ds = MEDSDataset.open(root)
    events = ds.scan()
    split_names = [s for s in ds.splits_present() if ds.shard_paths(s)]

    per_code = events.group_by(S.CODE).agg(pl.len().alias("events"))
    queries = [
        _split_query(events),
        per_code.sort(["events", S.CODE], descending=[True, False]).head(TOP_CODES),
        per_code.group_by(PREFIX_EXPR.alias("prefix")).agg(
            pl.len().alias("codes"), pl.col("events").sum()
        ).sort(["events", "prefix"], descending=[True, False]),
        events.group_by(S.SUBJECT_ID).agg(pl.len().alias("n")).select("n"),
        *(_split_query(ds.scan(name)) for name in split_names),
    ]
    total, top, prefixes, per_subject, *split_rows = pl.collect_all(queries)

    return DatasetStats(
        root=str(ds.root),
        name=ds.metadata().get("dataset_name"),
        total=_split_stats(total.row(0, named=True)),
        splits={n: _split_stats(r.row(0, named=True)) for n, r in zip(split_names, split_rows,
                                                                      strict=True)},
        prefixes=[PrefixStats(r["prefix"], int(r["codes"]), int(r["events"]))
                  for r in prefixes.iter_rows(named=True)],
        top_codes=[(r[S.CODE], int(r["events"])) for r in top.iter_rows(named=True)],
        events_per_subject=Distribution.of(per_subject["n"].to_numpy()),
        codes_in_metadata=ds.codes().height,
        seconds=time.perf_counter() - start,
    )


# -- presentation ------------------------------------------------------------------

def _span(s: SplitStats) -> str:
    if s.time_min is None:
        return "-"
    return f"{s.time_min:%Y-%m-%d} .. {s.time_max:%Y-%m-%d}"


def render(stats: DatasetStats, *, prefixes: int = 15):
    """A rich renderable (a group of tables) for the CLI."""
    from rich.console import Group
    from rich.table import Table

    title = stats.name or Path(stats.root).name
    overview = Table(title=f"{title}: {stats.subjects:,} subjects, {stats.events:,} events",
                     title_justify="left")
    for col in ("split", "subjects", "events", "codes", "static", "numeric", "text", "time span"):
        overview.add_column(col, justify="left" if col in ("split", "time span") else "right")

    def add(name: str, s: SplitStats, **kw) -> None:
        overview.add_row(name, f"{s.subjects:,}", f"{s.events:,}", f"{s.codes:,}",
                         f"{s.static_events:,}", f"{s.numeric_coverage:.1%}",
                         f"{s.text_coverage:.1%}", _span(s), **kw)

    for i, (name, s) in enumerate(stats.splits.items()):
        add(name, s, end_section=i == len(stats.splits) - 1)
    add("all", stats.total, style="bold")

    d = stats.events_per_subject
    dist = Table(title="Events per subject", title_justify="left")
    for col in ("min", "p25", "median", "p75", "p95", "max", "mean"):
        dist.add_column(col, justify="right")
    dist.add_row(f"{d.min:,}", f"{d.p25:,.0f}", f"{d.median:,.0f}", f"{d.p75:,.0f}",
                 f"{d.p95:,.0f}", f"{d.max:,}", f"{d.mean:,.1f}")

    fam = Table(title=f"Code families (codes in metadata/codes.parquet: "
                      f"{stats.codes_in_metadata:,})", title_justify="left")
    fam.add_column("prefix")
    fam.add_column("codes", justify="right")
    fam.add_column("events", justify="right")
    fam.add_column("share", justify="right")
    for p in stats.prefixes[:prefixes]:
        share = p.events / stats.events if stats.events else 0.0
        fam.add_row(p.prefix or "(empty)", f"{p.codes:,}", f"{p.events:,}", f"{share:.1%}")
    if len(stats.prefixes) > prefixes:
        rest = stats.prefixes[prefixes:]
        fam.add_row(f"... {len(rest)} more", f"{sum(p.codes for p in rest):,}",
                    f"{sum(p.events for p in rest):,}", "", style="dim")
    return Group(overview, dist, fam)


# -- vocabulary coverage -------------------------------------------------------------


@dataclass(frozen=True)
class VocabularyCoverage:
    """Share of a dataset's events (and lab events) inside a vocabulary, after mapping."""

    vocabulary: str  # where the vocabulary came from
    events: int
    covered: int
    lab_events: int
    lab_covered: int
    top_uncovered: list[tuple[str, str | None, int]]  # code, description, events

    @property
    def share(self) -> float:
        return self.covered / self.events if self.events else 0.0

    @property
    def lab_share(self) -> float:
        return self.lab_covered / self.lab_events if self.lab_events else 0.0

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.events and self.share < COVERAGE_WARNING:
            out.append(f"only {self.share:.1%} of events are inside the vocabulary "
                       f"(below {COVERAGE_WARNING:.0%}); the rest reach the model as [UNK]")
        if self.lab_events and self.lab_share < COVERAGE_WARNING:
            out.append(f"only {self.lab_share:.1%} of lab events are inside the vocabulary "
                       f"(below {COVERAGE_WARNING:.0%}); map lab codes to LOINC (codes.parquet "
                       "parent_codes or the site's code_map)")
        return out


def anchor_vocabulary(anchor_root: str | Path, *, min_count: float = DEFAULT_MIN_COUNT):
    """The anchor's part of the shared vocabulary: its train split's exact patient counts
    of mapped codes, kept at `min_count` (what the vocabulary round starts from)."""
    from fedehr.shared.tokenizer.mapping import CodeMapping
    from fedehr.shared.tokenizer.merge import exact_code_counts, merge_vocabulary

    anchor = MEDSDataset.open(anchor_root)
    mapping = CodeMapping.from_config(None, anchor.codes(), where=str(anchor_root))
    counts = exact_code_counts(mapping.apply(anchor.scan(S.TRAIN).collect()))
    return merge_vocabulary(anchor_counts=counts, min_count=min_count)


def vocabulary_coverage(root: str | Path, vocab, source: str, *, mapping=None,
                        top: int = 10) -> VocabularyCoverage:
    """Coverage of the dataset at `root` by `vocab` (a `Vocabulary`), all events and lab
    events; `mapping` defaults to the dataset's own codes.parquet parents."""
    from fedehr.shared.tokenizer.mapping import CodeMapping, coverage

    ds = MEDSDataset.open(root)
    codes = ds.codes()
    if mapping is None:
        mapping = CodeMapping.from_config(None, codes, where=str(root))
    events = ds.scan().select(S.CODE).collect()
    labs = [c for c in events[S.CODE].unique().to_list()
            if c.startswith(LAB_PREFIXES) or mapping.map_code(c).code.startswith(LAB_STANDARD)]
    everything = coverage(events, vocab, mapping, top=top)
    lab = coverage(events.filter(pl.col(S.CODE).is_in(labs)), vocab, mapping, top=0)
    described = dict(codes.select(S.CODE, "description").iter_rows()) \
        if "description" in codes.columns else {}
    return VocabularyCoverage(
        vocabulary=source, events=everything.events, covered=everything.covered_after,
        lab_events=lab.events, lab_covered=lab.covered_after,
        top_uncovered=[(c, described.get(c), n) for c, n in everything.top_uncovered])


def render_coverage(cov: VocabularyCoverage):
    """A rich table of the coverage, its warnings, and the most frequent uncovered codes
    named in clinical words (codes.parquet descriptions)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Vocabulary coverage ({cov.vocabulary})", title_justify="left")
    for col in ("", "events", "inside", "share"):
        table.add_column(col, justify="right" if col else "left")
    for name, n, k, share in (("all events", cov.events, cov.covered, cov.share),
                              ("lab events", cov.lab_events, cov.lab_covered, cov.lab_share)):
        style = "bold red" if n and share < COVERAGE_WARNING else None
        table.add_row(name, f"{n:,}", f"{k:,}", f"{share:.1%}" if n else "-", style=style)
    parts = [table]
    parts += [Text(f"warning: {w}", style="bold red") for w in cov.warnings]
    if cov.top_uncovered:
        miss = Table(title="Most frequent codes outside the vocabulary", title_justify="left")
        for col in ("code", "description", "events"):
            miss.add_column(col, justify="right" if col == "events" else "left")
        for code, desc, n in cov.top_uncovered:
            miss.add_row(code, _short(desc or "-", 60), f"{n:,}")
        parts.append(miss)
    return Group(*parts)


def _short(label: str, width: int = 42) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_stats(stats: DatasetStats, png_path: str | Path) -> Path:
    """Write a two-panel PNG: events-per-subject histogram and the top-20 codes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(14, 6), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])

    d = stats.events_per_subject
    if d.bin_counts:
        edges = np.asarray(d.bin_edges)
        left.stairs(d.bin_counts, edges, fill=True, alpha=0.8)
        if edges[-1] / max(edges[0], 1) > 20:
            left.set_xscale("log")
        left.axvline(d.median, color="black", linestyle="--", linewidth=1,
                     label=f"median {d.median:,.0f}")
        left.legend(loc="upper right")
    left.set_xlabel("events per subject")
    left.set_ylabel("subjects")
    left.set_title(f"Events per subject ({stats.subjects:,} subjects)")

    codes = stats.top_codes[:TOP_CODES]
    labels = [_short(c) for c, _ in codes][::-1]
    counts = [n for _, n in codes][::-1]
    right.barh(range(len(codes)), counts)
    right.set_yticks(range(len(codes)), labels, fontsize=8)
    right.set_xlabel("events")
    right.set_title(f"Top {len(codes)} codes of {stats.codes:,}")
    right.ticklabel_format(axis="x", style="plain")
    right.xaxis.set_major_formatter(lambda x, _pos: f"{x:,.0f}")

    title = stats.name or Path(stats.root).name
    fig.suptitle(f"{title}: {stats.events:,} events")
    fig.savefig(png_path, dpi=120)
    return png_path
