"""The source layer both CSV ETLs share: one rule for finding files, one for reading them."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from fedehr.shared.data.etl import mimic_iv, synthea
from fedehr.shared.data.etl.source import (
    MALFORMED_ROW,
    TableReader,
    TableSpec,
    find_table,
    resolve,
)
from fedehr.shared.data.etl.summary import ImportSummary
from fedehr.shared.errors import DataError
from tests.fixtures.mimic_iv_fixture import write_mimic_iv_fixture
from tests.fixtures.synthea_fixture import write_synthea_fixture

SPEC = TableSpec("t", ("Id", ("START", "DATE")), ("NOTE",))


def _csv(path: Path, text: str, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def test_a_table_is_its_csv_or_its_csv_gz(tmp_path):
    assert find_table(tmp_path, "t") is None
    gz = _csv(tmp_path / "t.csv.gz", "Id\n1\n", gz=True)
    assert find_table(tmp_path, "t") == gz


def test_both_csv_and_csv_gz_present_stops_with_the_fix(tmp_path):
    _csv(tmp_path / "t.csv", "Id\n1\n")
    _csv(tmp_path / "t.csv.gz", "Id\n1\n", gz=True)
    with pytest.raises(DataError, match="keep one of the two files"):
        find_table(tmp_path, "t")


def test_mimic_iv_and_synthea_follow_the_same_rule(tmp_path):
    mimic = write_mimic_iv_fixture(tmp_path / "mimic")
    labs = mimic.root / "hosp" / "labevents.csv"
    _csv(labs.with_name("labevents.csv.gz"), labs.read_text(), gz=True)
    syn = write_synthea_fixture(tmp_path / "synthea")
    obs = syn.root / "observations.csv"
    _csv(obs.with_name("observations.csv.gz"), obs.read_text(), gz=True)
    for convert, src in ((mimic_iv.convert, mimic.root), (synthea.convert, syn.root)):
        with pytest.raises(DataError, match="both"):
            convert(src, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_header_matches_spellings_without_case_and_names_columns_as_the_spec(tmp_path):
    table = resolve(SPEC, _csv(tmp_path / "t.csv", "id, date ,note\n1,2020-01-01,x\n"),
                    fix_missing="m", fix_damaged="d")
    assert table.columns == {"Id": "id", "START": " date ", "NOTE": "note"}
    with pytest.raises(DataError, match="missing column 'START/DATE'"):
        resolve(SPEC, _csv(tmp_path / "u.csv", "Id\n1\n"), fix_missing="m", fix_damaged="d")


def test_chunks_are_exactly_chunk_rows_and_malformed_rows_are_counted(tmp_path):
    body = "".join(f"{i},2020-01-0{1 + i % 9},n{i}\n" for i in range(7))
    path = _csv(tmp_path / "t.csv.gz", "Id,START,NOTE\n" + body + "8,x\n", gz=True)
    table = resolve(SPEC, path, fix_missing="m", fix_damaged="d")
    summary = ImportSummary("src", "dest")
    chunks = list(TableReader(summary, chunk_rows=3, fix_damaged="d").chunks(table))
    assert [c.height for c in chunks] == [3, 3, 1]
    assert chunks[0].columns == ["Id", "START", "NOTE"]
    assert summary.rows_dropped == {f"t: {MALFORMED_ROW}": 1}
    assert summary.tables == {"t": 8} and summary.rows_read == 8


def test_a_cut_short_gzip_is_a_data_error_naming_the_file(tmp_path):
    data = gzip.compress(("Id,START\n" + "1,2020-01-01\n" * 5000).encode())
    path = tmp_path / "t.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    table = resolve(SPEC, path, fix_missing="m", fix_damaged="re-export it")
    with pytest.raises(DataError, match="t.csv.gz"):
        list(TableReader(ImportSummary("s", "d"), chunk_rows=10, fix_damaged="d").chunks(table))


def test_the_summary_names_where_a_reason_was_first_met():
    summary = ImportSummary("s", "d")
    summary.drop_in("a.ndjson", "unknown patient", where="a.ndjson:3")
    summary.drop_in("a.ndjson", "unknown patient", 2, where="a.ndjson:9")
    assert summary.rows_dropped == {"a.ndjson: unknown patient": 3}
    assert summary.first_seen == {"a.ndjson: unknown patient": "a.ndjson:3"}
