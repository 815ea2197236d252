"""The FHIR R4 import: MII-shaped NDJSON bulk exports and Synthea-shaped bundles to MEDS."""

from __future__ import annotations

import base64
import json

import polars as pl
import pytest

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl import fhir, synthea
from fedehr.shared.data.etl.source import stable_subject_id
from fedehr.shared.data.etl.summary import DUPLICATE_EVENTS
from fedehr.shared.data.validate import validate
from fedehr.shared.errors import DataError
from tests.fixtures.fhir_fixture import LETTER, write_mii_bulk_export, write_synthea_pair


def _events(root) -> pl.DataFrame:
    return MEDSDataset.open(root).scan().collect()


def _codes(root) -> dict[str, dict]:
    return {r["code"]: r for r in MEDSDataset.open(root).codes().iter_rows(named=True)}


@pytest.fixture(scope="module")
def mii(tmp_path_factory):
    root = tmp_path_factory.mktemp("mii")
    export = write_mii_bulk_export(root / "export")
    summary = fhir.convert(export.root, root / "meds", chunk_rows=3)
    return export, summary, root / "meds"


def test_every_planted_drop_is_counted_under_its_reason(mii):
    export, summary, _ = mii
    dropped = {k: v for k, v in summary.rows_dropped.items() if k != DUPLICATE_EVENTS}
    assert dropped == export.dirty


def test_each_drop_reason_names_the_file_and_line_it_was_first_met(mii):
    _, summary, _ = mii
    assert summary.first_seen[f"Observation: {fhir.BAD_DATE}"] == "Observation.ndjson:4"
    assert summary.first_seen[f"file: {fhir.TRUNCATED}"].startswith("Immunization.ndjson.gz")
    assert set(summary.first_seen) == set(summary.rows_dropped) - {DUPLICATE_EVENTS}


def test_icd10gm_keeps_its_system_and_gets_the_who_level_icd10cm_parent(mii):
    _, _, dest = mii
    codes = _codes(dest)
    assert codes["ICD10GM/I50.01"]["parent_codes"] == ["ICD10CM/I50.0"]
    assert codes["ICD10GM/E11.90"]["description"] == "Diabetes mellitus, Typ 2"
    assert "OPS/8-933" in codes


def test_labs_keep_their_ucum_unit_and_their_loinc_parent(mii):
    _, _, dest = mii
    events = _events(dest)
    krea = events.filter(pl.col(S.CODE) == "LOINC/2160-0//mg/dL")
    assert krea[S.NUMERIC_VALUE].to_list() == pytest.approx([1.3])
    assert _codes(dest)["LOINC/2823-3//mmol/L"]["parent_codes"] == ["LOINC/2823-3"]
    local = "LOCAL//uk-beispiel.de/fhir/CodeSystem/labor//KREA-S//umol/L"
    assert events.filter(pl.col(S.CODE) == local).height == 1


def test_an_intensive_care_department_contact_is_an_icu_stay(mii):
    _, _, dest = mii
    icu = _events(dest).filter(pl.col(S.CODE).str.starts_with("ICU_"))
    assert sorted(zip(icu[S.CODE], icu[S.TIME].cast(pl.String), strict=True)) == [
        ("ICU_ADMISSION//Intensivmedizin", "2023-01-11 01:00:00.000000"),
        ("ICU_DISCHARGE//Intensivmedizin", "2023-01-12 13:00:00.000000")]
    # the ICU contact is part of the stay, not a second admission
    admissions = _events(dest).filter(pl.col(S.CODE) == "HOSPITAL_ADMISSION//inpatient")
    assert admissions.height == 1


def test_the_german_discharge_letter_reaches_text_value_as_a_note(mii):
    _, _, dest = mii
    notes = _events(dest).filter(pl.col(S.CODE) == fhir.DISCHARGE_NOTE)
    assert notes[S.TEXT_VALUE].to_list() == [LETTER]


def test_medication_statement_takes_the_atc_code_of_its_medication(mii):
    _, _, dest = mii
    codes = set(_events(dest)[S.CODE])
    assert {"ATC/C03CA01", "MEDICATION_END//ATC/C03CA01"} <= codes


def test_times_with_offsets_become_utc_and_partial_dates_their_first_day(mii):
    export, _, dest = mii
    events = _events(dest)
    p1 = stable_subject_id(export.patients[0])
    birth = events.filter((pl.col(S.SUBJECT_ID) == p1) & (pl.col(S.CODE) == S.BIRTH_CODE))
    assert str(birth[S.TIME][0]) == "1951-03-01 00:00:00"
    adm = events.filter(pl.col(S.CODE) == "HOSPITAL_ADMISSION//inpatient")
    assert str(adm[S.TIME][0]) == "2023-01-10 08:00:00"


def test_the_import_is_valid_meds(mii):
    _, _, dest = mii
    assert [p for p in validate(dest) if p.severity == "error"] == []


def test_gzipped_ndjson_gives_the_same_events(tmp_path, mii):
    _, _, plain = mii
    export = write_mii_bulk_export(tmp_path / "export", gz=True)
    fhir.convert(export.root, tmp_path / "meds")
    order = [S.SUBJECT_ID, S.TIME, S.CODE]
    assert _events(tmp_path / "meds").sort(order, nulls_last=True).equals(
        _events(plain).sort(order, nulls_last=True))


def test_synthea_csv_and_fhir_give_the_same_subjects_and_events(tmp_path):
    csv_dir, fhir_dir = write_synthea_pair(tmp_path / "src")
    synthea.convert(csv_dir, tmp_path / "from-csv")
    summary = fhir.convert(fhir_dir, tmp_path / "from-fhir")
    assert dict(summary.rows_dropped) == {f"Claim: {fhir.NOT_IMPORTED} (Claim)": 2}
    cols = [S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE, S.TEXT_VALUE]
    a = _events(tmp_path / "from-csv").select(cols).sort(cols, nulls_last=True)
    b = _events(tmp_path / "from-fhir").select(cols).sort(cols, nulls_last=True)
    assert a.height > 30 and a.equals(b)


def test_a_bundle_cut_short_is_counted_and_the_other_bundles_import(tmp_path):
    _, fhir_dir = write_synthea_pair(tmp_path / "src")
    bundle = fhir_dir / "patient_1.json"
    bundle.write_text(bundle.read_text()[:500])
    summary = fhir.convert(fhir_dir, tmp_path / "meds")
    assert summary.rows_dropped[f"file: {fhir.BAD_JSON}"] == 1
    assert summary.first_seen[f"file: {fhir.BAD_JSON}"].startswith("patient_1.json:")
    assert summary.subjects == 1


def test_no_patient_at_all_is_a_data_error_and_nothing_is_written(tmp_path):
    src = tmp_path / "export"
    src.mkdir()
    (src / "Observation.ndjson").write_text(json.dumps({"resourceType": "Observation"}) + "\n")
    with pytest.raises(DataError, match="no Patient resource"):
        fhir.convert(src, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()


@pytest.mark.parametrize(("system", "prefix"), [
    ("http://fhir.de/CodeSystem/dimdi/icd-10-gm", "ICD10GM"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "ICD10CM"),
    ("http://fhir.de/CodeSystem/bfarm/ops", "OPS"),
    ("http://snomed.info/sct", "SNOMEDCT"),
    ("http://www.whocc.no/atc", "ATC"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "RxNorm"),
    ("http://hl7.org/fhir/sid/cvx", "CVX"),
    ("urn:oid:1.2.276.0.76.5.1", "LOCAL//oid:1.2.276.0.76.5.1"),
])
def test_code_systems_become_the_documented_prefixes(system, prefix):
    assert fhir.system_prefix(system) == prefix


def test_an_attachment_in_latin1_is_decoded_by_its_charset():
    data = base64.b64encode("Entlassbrief: Übelkeit".encode("latin-1")).decode()
    text = fhir.attachment_text({"contentType": "text/plain; charset=iso-8859-1", "data": data})
    assert text == "Entlassbrief: Übelkeit"


def test_data_import_from_fhir_prints_each_drop_reason_with_where(tmp_path):
    from typer.testing import CliRunner

    from fedehr.shared.data.cli import app

    export = write_mii_bulk_export(tmp_path / "export")
    result = CliRunner().invoke(app, ["import", "--from", "fhir", str(export.root),
                                      str(tmp_path / "meds")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Observation: malformed date" in result.output
    assert "Observation.ndjson:4" in result.output


def test_fhir_labs_map_to_the_unit_bearing_loinc_tokens_of_the_anchor(mii, tmp_path):
    from fedehr.shared.tokenizer.mapping import CodeMapping

    _, _, dest = mii
    mapping = CodeMapping.from_config(None, MEDSDataset.open(dest).codes())
    assert mapping.map_code("LOINC/2160-0//mg/dL").code == "LOINC/2160-0//mg/dL"
    assert mapping.map_code("LOINC/2823-3//mmol/L").code == "LOINC/2823-3//mmol/L"
    umol = CodeMapping(parents={"LOINC/2160-0//umol/L": ["LOINC/2160-0"]})
    converted = umol.map_code("LOINC/2160-0//umol/L")
    assert converted.code == "LOINC/2160-0//mg/dL"
    assert converted.factor == pytest.approx(1 / 88.42)


def test_a_bundle_on_an_ndjson_line_imports_its_patient_and_its_events(tmp_path):
    _, fhir_dir = write_synthea_pair(tmp_path / "src")
    bundles = [json.loads(p.read_text()) for p in sorted(fhir_dir.glob("*.json"))]
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "Bundle.ndjson").write_text(
        "".join(json.dumps(b) + "\n" for b in bundles))
    fhir.convert(fhir_dir, tmp_path / "from-files")
    fhir.convert(tmp_path / "lines", tmp_path / "from-lines")
    order = [S.SUBJECT_ID, S.TIME, S.CODE]
    assert _events(tmp_path / "from-lines").sort(order, nulls_last=True).equals(
        _events(tmp_path / "from-files").sort(order, nulls_last=True))
