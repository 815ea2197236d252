"""compute_stats / render / plot_stats on small datasets made by MEDSWriter."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.stats import DatasetStats, compute_stats, plot_stats, render
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import DataError

T0 = datetime(2020, 1, 1)
SCHEMA = {S.SUBJECT_ID: pl.Int64, S.TIME: pl.Datetime("us"), S.CODE: pl.String,
          S.NUMERIC_VALUE: pl.Float32, S.TEXT_VALUE: pl.String}


def _events() -> pl.DataFrame:
    """Subject i has one static row and i timed rows; codes from three families."""
    rows = []
    codes = ["LAB//1//mg/dL", "LAB/2", "DIAGNOSIS//ICD10//E11", "BMI (kg/m2)"]
    for sid in range(1, 31):
        rows.append((sid, None, "GENDER//M", None, None))
        for k in range(sid):
            code = codes[k % len(codes)]
            rows.append((sid, T0 + timedelta(days=sid, hours=k), code,
                         float(k) if code.startswith("LAB") else None,
                         "28.1" if code.startswith("BMI") else None))
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats") / "meds"
    with MEDSWriter(root, dataset_name="tiny", etl_name="test", seed=1) as writer:
        writer.add_events(_events())
    return root


@pytest.fixture(scope="module")
def stats(dataset: Path) -> DatasetStats:
    return compute_stats(dataset)


@pytest.fixture(scope="module")
def frame(dataset: Path) -> pl.DataFrame:
    return MEDSDataset.open(dataset).scan().collect()


def test_totals_match_the_data(stats: DatasetStats, frame: pl.DataFrame) -> None:
    assert stats.subjects == frame[S.SUBJECT_ID].n_unique()
    assert stats.events == frame.height
    assert stats.codes == frame[S.CODE].n_unique()
    assert stats.total.static_events == frame[S.TIME].null_count()
    assert stats.name == "tiny"


def test_time_span_is_min_and_max_of_timed_events(stats: DatasetStats,
                                                   frame: pl.DataFrame) -> None:
    assert stats.total.time_min == frame[S.TIME].min()
    assert stats.total.time_max == frame[S.TIME].max()


def test_coverage_is_the_share_of_events_with_a_value(stats: DatasetStats,
                                                      frame: pl.DataFrame) -> None:
    assert stats.total.numeric_coverage == pytest.approx(
        frame[S.NUMERIC_VALUE].is_not_null().mean())
    assert stats.total.text_coverage == pytest.approx(frame[S.TEXT_VALUE].is_not_null().mean())


def test_split_counts_add_up_to_the_totals(stats: DatasetStats, dataset: Path) -> None:
    ds = MEDSDataset.open(dataset)
    assert set(stats.splits) == set(ds.splits_present())
    assert sum(s.subjects for s in stats.splits.values()) == stats.subjects
    assert sum(s.events for s in stats.splits.values()) == stats.events
    for name, s in stats.splits.items():
        assert s.events == ds.scan(name).collect().height


def test_codes_are_grouped_by_prefix_before_the_first_slash(stats: DatasetStats,
                                                             frame: pl.DataFrame) -> None:
    by_prefix = {p.prefix: p for p in stats.prefixes}
    lab = frame.filter(pl.col(S.CODE).str.starts_with("LAB"))
    assert by_prefix["LAB"].events == lab.height
    assert by_prefix["LAB"].codes == 2  # "LAB//1//mg/dL" and "LAB/2"
    assert "DIAGNOSIS" in by_prefix and "GENDER" in by_prefix
    # A label with a unit is not cut at its "/".
    assert "BMI (kg/m2)" in by_prefix
    assert sum(p.events for p in stats.prefixes) == stats.events
    assert [p.events for p in stats.prefixes] == sorted(
        (p.events for p in stats.prefixes), reverse=True)


def test_top_codes_are_the_most_frequent_codes(stats: DatasetStats,
                                               frame: pl.DataFrame) -> None:
    counts = frame[S.CODE].value_counts().sort(["count", S.CODE], descending=[True, False])
    assert stats.top_codes == list(zip(counts[S.CODE], counts["count"], strict=True))[:20]


def test_events_per_subject_distribution(stats: DatasetStats, frame: pl.DataFrame) -> None:
    per = frame.group_by(S.SUBJECT_ID).len()["len"]
    d = stats.events_per_subject
    assert (d.min, d.max) == (per.min(), per.max())
    assert d.median == pytest.approx(per.median())
    assert d.mean == pytest.approx(per.mean())
    assert sum(d.bin_counts) == stats.subjects
    assert len(d.bin_edges) == len(d.bin_counts) + 1


def test_stats_convert_to_json(stats: DatasetStats) -> None:
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["total"]["events"] == stats.events
    assert data["total"]["time_min"] == stats.total.time_min.isoformat()


def test_render_is_a_rich_table_with_the_counts(stats: DatasetStats) -> None:
    console = Console(width=140, record=True)
    console.print(render(stats))
    text = console.export_text()
    assert f"{stats.events:,}" in text
    for split in stats.splits:
        assert split in text
    assert "LAB" in text


def test_plot_writes_a_png(stats: DatasetStats, tmp_path: Path) -> None:
    out = plot_stats(stats, tmp_path / "plots" / "stats.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_of_a_folder_that_is_not_meds_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data/"):
        compute_stats(tmp_path)
