"""An --overwrite deletes only a previous output of the same kind, never an input or a
foreign file; leftovers of a killed run are removed by the next run (issue 18, section 1)."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from fedehr.shared.atomic import OUTPUT_MARKER, staged_directory
from fedehr.shared.data.etl import synthea
from fedehr.shared.errors import DataError
from tests.fixtures import synthea_fixture as sf
from tests.fixtures.cli import run_fedehr


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "Klinik Ärzte ü"
    folder.mkdir()
    return folder


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size)
                  for p in folder.rglob("*") if p.is_file())


def test_import_into_its_own_source_is_refused_and_keeps_the_source(scratch, capsys):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    before = _snapshot(fx.root)
    result = run_fedehr(capsys, "data", "import", "--from", "synthea", fx.root, fx.root,
                        "--overwrite")
    assert result.code != 0
    assert "overlaps the input" in result.err
    assert _snapshot(fx.root) == before


def test_import_into_a_parent_of_its_source_is_refused(scratch, capsys):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    before = _snapshot(fx.root)
    result = run_fedehr(capsys, "data", "import", "--from", "synthea", fx.root, scratch,
                        "--overwrite")
    assert result.code != 0 and "overlaps the input" in result.err
    assert _snapshot(fx.root) == before


def test_import_into_a_folder_inside_its_source_is_refused(scratch):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    with pytest.raises(DataError, match="overlaps the input"):
        synthea.convert(fx.root, fx.root / "meds")
    assert not (fx.root / "meds").exists()


def test_overwrite_refuses_a_folder_of_foreign_files(scratch, capsys):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    dest = scratch / "site data"
    dest.mkdir()
    (dest / "ledger.json").write_text("{}")
    (dest / "notes.txt").write_text("do not delete")
    result = run_fedehr(capsys, "data", "import", "--from", "synthea", fx.root, dest,
                        "--overwrite")
    assert result.code != 0 and "not a MEDS dataset written by fedehr" in result.err
    assert sorted(p.name for p in dest.iterdir()) == ["ledger.json", "notes.txt"]


def test_overwrite_refuses_a_previous_import_that_now_holds_a_foreign_file(scratch):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    dest = scratch / "meds"
    synthea.convert(fx.root, dest)
    (dest / "ledger.json").write_text("{}")
    with pytest.raises(DataError, match="ledger.json"):
        synthea.convert(fx.root, dest, overwrite=True)
    assert (dest / "ledger.json").read_text() == "{}"


def test_overwrite_replaces_a_previous_import(scratch):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    dest = scratch / "meds"
    synthea.convert(fx.root, dest)
    synthea.convert(fx.root, dest, overwrite=True)
    assert json.loads((dest / OUTPUT_MARKER).read_text())["kind"] == "MEDS dataset"


def test_overwrite_refuses_an_output_of_another_kind(scratch):
    dest = scratch / "model"
    with staged_directory(dest, kind="checkpoint") as stage:
        (stage / "card.json").write_text("{}")
    with pytest.raises(DataError, match="not a MEDS dataset"):
        with staged_directory(dest, kind="MEDS dataset", overwrite=True):
            pass
    assert (dest / "card.json").exists()


def test_leftover_staging_of_a_killed_run_is_removed_by_the_next_run(scratch):
    fx = sf.write_synthea_fixture(scratch / "raw export")
    stale = scratch / ".meds.abc123.staging"
    (stale / "_staging").mkdir(parents=True)
    (stale / "_staging" / "000000.parquet").write_bytes(b"patient rows")
    old = scratch / ".meds.old"
    old.mkdir()
    synthea.convert(fx.root, scratch / "meds")
    assert sorted(p.name for p in scratch.iterdir()) == ["meds", "raw export"]


def test_a_second_writer_of_the_same_folder_is_refused_at_once(scratch):
    dest = scratch / "meds"
    lock = os.open(scratch / ".meds.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with pytest.raises(DataError, match="another command is writing"):
            with staged_directory(dest, kind="MEDS dataset"):
                pass
    finally:
        os.close(lock)
    assert not dest.exists()


def test_train_local_refuses_an_output_that_is_its_dataset(scratch, capsys):
    data = scratch / "site meds"
    data.mkdir()
    (data / "keep.parquet").write_bytes(b"rows")
    result = run_fedehr(capsys, "model", "train-local", "--data", data, "--out", data,
                        "--overwrite")
    assert result.code != 0 and "overlaps the input" in result.err
    assert (data / "keep.parquet").read_bytes() == b"rows"


def test_demo_refuses_a_folder_it_did_not_make(scratch, capsys):
    (scratch / "pki").mkdir()
    (scratch / "pki" / "ca.key").write_text("the hospital's own key")
    result = run_fedehr(capsys, "demo", "--out", scratch)
    assert result.code != 0 and "not made by `fedehr demo`" in result.err
    assert (scratch / "pki" / "ca.key").read_text() == "the hospital's own key"


def test_ask_refuses_an_output_folder_before_loading_anything(scratch, capsys):
    result = run_fedehr(capsys, "model", "ask", "--checkpoint", scratch / "none",
                        "--data", scratch / "none", "--cohort", "--prompt", "death",
                        "--out", scratch)
    assert result.code != 0 and "is a folder" in result.err


def test_evaluate_refuses_a_report_folder_inside_the_dataset(scratch, capsys):
    data = scratch / "meds"
    data.mkdir()
    result = run_fedehr(capsys, "model", "evaluate", "--checkpoint", scratch / "none",
                        "--data", data, "--out", data / "report")
    assert result.code != 0 and "overlaps the input" in result.err
    assert list(data.iterdir()) == []


def test_a_cache_writer_removes_a_killed_runs_staging_too(scratch):
    stale = scratch / ".tokens-abc.x1y2.staging"
    stale.mkdir()
    (stale / "tokens.npy").write_bytes(b"patient tokens")
    with staged_directory(scratch / "tokens-abc", overwrite=True) as stage:
        (stage / "tokens.npy").write_bytes(b"new")
    assert sorted(p.name for p in scratch.iterdir()) == ["tokens-abc"]


def test_stats_refuses_a_plot_inside_the_dataset_before_reading_it(scratch, capsys):
    data = scratch / "meds"
    (data / "metadata").mkdir(parents=True)
    (data / "metadata" / "codes.parquet").write_bytes(b"codes")
    result = run_fedehr(capsys, "data", "stats", data, "--plot", data / "metadata" /
                        "codes.parquet", "--no-coverage")
    assert result.code != 0 and "overlaps the input" in result.err
    assert (data / "metadata" / "codes.parquet").read_bytes() == b"codes"


def test_stats_refuses_a_plot_path_that_is_a_folder_before_the_work(scratch, capsys):
    result = run_fedehr(capsys, "data", "stats", scratch / "meds", "--plot", scratch,
                        "--no-coverage")
    assert result.code != 0 and "is a folder" in result.err


def test_ask_refuses_to_replace_a_file_it_did_not_write(scratch, capsys):
    notes = scratch / "notes.parquet"
    notes.write_bytes(b"the ward's own notes")
    result = run_fedehr(capsys, "model", "ask", "--checkpoint", scratch / "none",
                        "--data", scratch / "none", "--cohort", "--prompt", "death",
                        "--out", notes)
    assert result.code != 0 and "not a predictions file" in result.err
    assert notes.read_bytes() == b"the ward's own notes"
