"""What is in each hospital's record: MEDS validity, timing, notes, images, PROs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from meds import CodeMetadataSchema, DataSchema

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth.catalog import CONDITIONS, EMBEDDING_DIM, IMAGE_FINDINGS
from fedehr.shared.data.synth.imaging import encoder


def test_output_is_readable_and_passes_meds_schema_checks(hospitals):
    _, summaries = hospitals
    for s in summaries:
        ds = MEDSDataset.open(s.path)
        assert ds.splits_present() == sorted(S.SPLITS)
        for shard in ds.shard_paths():
            DataSchema.validate(pq.read_table(shard))
        CodeMetadataSchema.validate(pq.read_table(s.path / S.CODES_FILE))
        assert ds.scan().select(pl.len()).collect().item() == s.events
        assert ds.metadata()["dataset_name"] == s.name


def test_every_event_code_has_a_description(hospitals, events):
    _, summaries = hospitals
    for s in summaries:
        codes = MEDSDataset.open(s.path).codes()
        described = set(codes.filter(pl.col("description").is_not_null())["code"])
        assert set(events[s.name]["code"].unique()) <= described


def test_sex_is_static_and_birth_precedes_everything(events):
    for df in events.values():
        sex = df.filter(pl.col("code").str.starts_with("GENDER//"))
        assert sex["time"].is_null().all()
        assert sex["subject_id"].n_unique() == sex.height == df["subject_id"].n_unique()
        first = df.drop_nulls("time").group_by("subject_id").agg(pl.col("code").sort_by("time")
                                                                   .first())
        assert (first["code"] == S.BIRTH_CODE).all()


def test_diagnoses_are_stamped_at_discharge_not_admission(events):
    for df in events.values():
        dx = df.filter(pl.col("code").str.starts_with("DIAGNOSIS//ICD//10//"))
        discharges = df.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//"))
        admissions = df.filter(pl.col("code").str.starts_with("HOSPITAL_ADMISSION//"))
        key = ["subject_id", "time"]
        assert dx.height > 0
        assert dx.join(discharges, on=key, how="anti").height == 0
        assert dx.join(admissions, on=key, how="semi").height == 0


def test_diagnosis_codes_have_dotted_icd10cm_parents(hospitals):
    _, summaries = hospitals
    codes = MEDSDataset.open(summaries[0].path).codes().filter(
        pl.col("code").str.starts_with("DIAGNOSIS//"))
    for code, parents in zip(codes["code"], codes["parent_codes"], strict=True):
        (parent,) = parents
        assert parent.startswith("ICD10CM/")
        assert parent.removeprefix("ICD10CM/").replace(".", "") == code.split("//")[-1]


def test_discharge_summary_mentions_every_coded_diagnosis(events):
    term = {icd.replace(".", ""): c.term for c in CONDITIONS for icd, _ in c.all_codes()}
    for df in events.values():
        notes = df.filter(pl.col("code") == "NOTE//DISCHARGE_SUMMARY").select(
            "subject_id", "time", pl.col("text_value").alias("note"))
        dx = (df.filter(pl.col("code").str.starts_with("DIAGNOSIS//"))
              .with_columns(pl.col("code").str.split("//").list.last().alias("icd"))
              .join(notes, on=["subject_id", "time"], how="left"))
        assert dx["note"].is_not_null().all()
        missing = [(icd, text) for icd, text in zip(dx["icd"], dx["note"], strict=True)
                   if term[icd] not in text]
        assert missing == []


def test_discharge_summary_quotes_an_abnormal_lab_value_present_in_the_record(events):
    df = events["hospital_a"]
    notes = df.filter(pl.col("code") == "NOTE//DISCHARGE_SUMMARY")
    quoted = notes.filter(pl.col("text_value").str.contains("Creatinine rose to"))
    assert quoted.height > 10
    for sid, text in zip(quoted["subject_id"][:20], quoted["text_value"][:20], strict=True):
        value = float(text.split("Creatinine rose to ")[1].split(" ")[0])
        values = df.filter((pl.col("subject_id") == sid)
                           & (pl.col("code") == "LAB//2160-0//mg/dL"))["numeric_value"]
        assert np.isclose(values.to_numpy(), value, atol=1e-4).any()


def test_image_sidecar_rows_match_image_events(hospitals, events):
    _, summaries = hospitals
    for s in summaries:
        images = events[s.name].filter(pl.col("code").str.starts_with("IMAGE//"))
        sidecar = pl.read_parquet(s.path / "images" / "embeddings.parquet")
        assert images["text_value"].is_not_null().all()
        assert sorted(images["text_value"]) == sorted(sidecar["study_id"])
        assert sidecar["study_id"].n_unique() == sidecar.height
        assert sidecar["embedding"].dtype == pl.List(pl.Float32)
        assert (sidecar["embedding"].list.len() == EMBEDDING_DIM).all()


def test_image_embedding_carries_the_pneumonia_finding(hospitals, events):
    _, summaries = hospitals
    w, _ = encoder()
    direction = w[IMAGE_FINDINGS.index("pneumonia")]
    s = summaries[0]
    df = events[s.name]
    pneumonia_dx = df.filter(pl.col("code").str.contains(r"DIAGNOSIS//ICD//10//(J189|J159|J13)$"))
    stays = df.filter(pl.col("code") == "IMAGE//CHEST_XRAY").select(
        "subject_id", pl.col("time"), pl.col("text_value").alias("study_id"))
    disch = df.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//")).select(
        "subject_id", pl.col("time").alias("discharge")).sort("discharge")
    stays = stays.sort("time").join_asof(disch, left_on="time", right_on="discharge",
                                         by="subject_id", strategy="forward",
                                         check_sortedness=False)
    labelled = stays.join(pneumonia_dx.select("subject_id", pl.col("time").alias("discharge"),
                                              pl.lit(True).alias("pneumonia")),
                          on=["subject_id", "discharge"], how="left")
    emb = pl.read_parquet(s.path / "images" / "embeddings.parquet")
    joined = labelled.join(emb, on="study_id")
    score = np.stack(joined["embedding"].to_list()) @ direction
    has = joined["pneumonia"].fill_null(False).to_numpy()
    assert score[has].mean() > score[~has].mean() + 0.5 * score.std()


def test_promis_physical_function_is_worse_with_heart_failure_or_copd(events):
    df = pl.concat(list(events.values()))
    sick = set(df.filter(pl.col("code").str.contains(r"//(I50\d*|J44\d*)$"))["subject_id"])
    pf = df.filter(pl.col("code") == "PRO//PROMIS//PHYSICAL_FUNCTION")
    is_sick = pf["subject_id"].is_in(list(sick))
    values = pf["numeric_value"].to_numpy()
    assert 40 < values.mean() < 60
    assert values[is_sick.to_numpy()].mean() < values[~is_sick.to_numpy()].mean() - 3
