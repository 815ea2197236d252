"""The page through an HTTP client: every page, the audit line, and every user mistake as a
message on the page (status 400), never a traceback."""

from __future__ import annotations

import io
import time

import polars as pl
import pytest
from fastapi.testclient import TestClient

from fedehr.shared.audit import read, verify
from fedehr.shared.ui.app import create_app
from fedehr.shared.ui.jobs import Job, Jobs
from tests.ui.conftest import QUESTION, answered, write_evaluation


def ask(client, subject="4", question=QUESTION, step="run", **extra):
    return client.post(f"/ask/{step}", data={"subject_id": subject, "question": question,
                                             "samples": "8", "seed": "0", **extra},
                       follow_redirects=False)


def cohort(client, ids, question="cardiac arrest within 1 day after procedure", step="run"):
    return client.post(f"/cohort/{step}", data={"subject_ids": ids, "question": question,
                                                "samples": "8", "seed": "0"},
                       follow_redirects=False)


def assert_message(response, text: str) -> None:
    assert response.status_code == 400
    assert text in response.text
    assert "Traceback" not in response.text and 'role="alert"' in response.text


def test_patient_history_reads_in_clinical_words_with_units(client):
    page = client.get("/patients", params={"subject_id": "4"})
    assert page.status_code == 200
    assert "Alpha procedure" in page.text and "Cardiac arrest" in page.text
    assert "Widget level [Mass/volume] in Serum" in page.text and "mg/dL</span>" in page.text
    assert page.text.index("Alpha procedure") < page.text.index("Cardiac arrest")


def test_the_question_is_shown_resolved_before_anything_is_sampled(client, settings):
    lines_before = len(read(settings.audit_log)) if settings.audit_log.exists() else 0
    page = ask(client, step="resolve")
    assert page.status_code == 200
    assert "EVENT//CARDIAC_ARREST (Cardiac arrest)" in page.text
    assert "PROC//ALPHA (Alpha procedure)" in page.text and "within 1 day" in page.text
    assert 'id="confirm"' in page.text
    assert (len(read(settings.audit_log)) if settings.audit_log.exists() else 0) == lines_before


def test_answer_equals_the_clinical_function_with_the_same_seed_and_is_audited(
        client, settings, world):
    from fedehr.shared.clinical.zero_shot import predict_detailed

    started = ask(client)
    assert started.status_code == 303
    job = started.headers["location"]
    assert answered(client, job)["state"] == "done"
    page = client.get(job).text
    ws = client.app.state.workspace
    resolution = ws.resolve(QUESTION)
    labels = pl.DataFrame({"subject_id": [4], "prediction_time": [
        ws.prediction_time(4, resolution)]}).cast({"prediction_time": pl.Datetime("us")})
    expected = predict_detailed(world.model, world.vocab, world.dataset, labels,
                                resolution.outcome, samples=8, seed=0).frame.row(0, named=True)
    assert f"<strong>{expected['probability']:.2f}</strong>" in page
    assert f"{expected['decided']} of 8 continuations" in page
    assert 'id="explanation"' in page and "<svg" in page
    assert "twice" in page.split('id="why"')[1]  # which changes are beyond the noise
    line = read(settings.audit_log)[-1]
    assert line["event"] == "ui-question" and line["who"] == "dr-test"
    assert line["patients"] == [4] and line["checkpoint"] == str(settings.checkpoint)
    assert f"entry {line['seq']}" in page and verify(settings.audit_log).ok


@pytest.mark.parametrize("subject, question, message", [
    ("999", QUESTION, "no events for subject 999"),
    ("abc", QUESTION, "&#39;abc&#39; is not a patient id"),
    ("4", "cardiac arrest soon", "within DURATION"),
    ("4", "zebra within 1 day", "no code matches"),
    ("4", "", "the question is empty"),
    ("3", QUESTION, "subject 3 has no alpha procedure"),
])
def test_ask_mistakes_are_messages_on_the_page(client, subject, question, message):
    assert_message(ask(client, subject, question, step="resolve"), message)
    assert_message(ask(client, subject, question, step="run"), message)


def test_unknown_patient_on_the_patients_page_is_a_message(client):
    assert_message(client.get("/patients", params={"subject_id": "999"}),
                   "no patient with subject_id 999")


def test_concepts_outside_the_vocabulary_or_ambiguous_are_messages(odd_client):
    odd = odd_client
    assert_message(ask(odd, question="stroke within 1 day after alpha procedure",
                       step="resolve"), "codes is in the model&#39;s vocabulary")
    assert_message(ask(odd, question="zorb within 1 day after alpha procedure",
                       step="resolve"), "matches 2 concepts")


def test_an_ambiguous_concept_is_offered_as_choices_and_the_choice_is_used(odd_client):
    question = "cardiac arrest within 1 day after procedure"
    offered = ask(odd_client, question=question, step="resolve")
    assert_message(offered, "matches 2 concepts")
    fieldset = offered.text.split('id="choices"')[1].split("</fieldset>")[0]
    assert fieldset.count('type="radio" ') == 2 and 'name="choice:procedure"' in fieldset
    assert "SNOMEDCT/1001: Alpha procedure" in fieldset and 'value="SNOMEDCT/1002"' in fieldset
    alpha = {"choice:procedure": "SNOMEDCT/1001"}
    confirm = ask(odd_client, question=question, step="resolve", **alpha)
    assert confirm.status_code == 200 and 'id="chosen"' in confirm.text
    resolution = confirm.text.split('class="resolution"')[1].split("</table>")[0]
    assert "PROC//ALPHA" in resolution and "PROC//BETA" not in resolution
    assert 'name="choice:procedure" value="SNOMEDCT/1001"' in confirm.text  # carried to run
    beta = ask(odd_client, question=question, step="resolve",
               **{"choice:procedure": "SNOMEDCT/1002"})
    assert_message(beta, "subject 4 has no procedure")  # the even patients had alpha
    started = ask(odd_client, question=question, **alpha)
    assert started.status_code == 303
    job = odd_client.app.state.jobs.get(started.headers["location"].rsplit("/", 1)[1])
    assert job.context["resolution"].resolved.index.codes == ("PROC//ALPHA",)
    assert job.context["audit"]["concepts_chosen"] == {"procedure": "SNOMEDCT/1001"}
    job.cancel()


def predicate_cohort(client, step="run", **fields):
    data = {"subject_ids": "", "question": "cardiac arrest within 1 day after procedure",
            "samples": "8", "seed": "0", **fields}
    return client.post(f"/cohort/{step}", data=data, follow_redirects=False)


def test_a_cohort_by_predicate_is_the_patients_site_patients_finds(client, world):
    from fedehr.shared.data.patients import find_patients

    predicate = {"with_code": "^PROC//ALPHA", "split": "train", "limit": "5"}
    confirm = predicate_cohort(client, step="resolve", **predicate)
    assert confirm.status_code == 200 and "a cohort of 5 patients" in confirm.text
    assert 'name="with_code" value="^PROC//ALPHA"' in confirm.text  # carried to run
    started = predicate_cohort(client, **predicate)
    job = started.headers["location"]
    assert answered(client, job)["state"] == "done"
    csv = pl.read_csv(io.BytesIO(client.get(f"{job}/predictions.csv").content))
    found = find_patients(world.dataset.root, code="^PROC//ALPHA", split="train", limit=5)
    assert csv["subject_id"].to_list() == found["subject_id"].to_list()
    line = read(client.app.state.workspace.settings.audit_log)[-1]
    assert line["cohort_predicate"] == {"code": "^PROC//ALPHA", "description": "",
                                        "split": "train", "limit": 5}


def test_a_predicate_cohort_leaves_out_patients_the_question_cannot_place(client):
    page = predicate_cohort(client, step="resolve", with_description="procedure", limit="6",
                            question="cardiac arrest within 1 day after alpha procedure")
    assert page.status_code == 200 and "a cohort of 3 patients" in page.text
    assert "3 patients the predicate found are left out (subject 1 has no alpha" in page.text


@pytest.mark.parametrize("fields, message", [
    ({"with_code": "^PROC//("}, "cannot use the code pattern"),
    ({"with_code": "^NOPE//"}, "no patient matches the predicate"),
    ({"with_description": "alpha", "split": "nosuchsplit"}, "in split &#39;nosuchsplit&#39;"),
    ({"with_code": "^PROC", "subject_ids": "2 4"}, "either patient ids or a predicate"),
    ({"with_code": "^PROC", "limit": "0"}, "a whole number from 1 to"),
    ({"with_code": "^PROC//BETA", "question": "cardiac arrest within 1 day after alpha "
      "procedure"}, "subject 1 has no alpha procedure"),
])
def test_cohort_predicate_mistakes_are_messages(client, fields, message):
    assert_message(predicate_cohort(client, step="resolve", **fields), message)
    assert_message(predicate_cohort(client, **fields), message)


def test_cohort_downloads_parse_in_the_label_schema(client):
    started = cohort(client, "2, 3\n4 5")
    assert started.status_code == 303
    job = started.headers["location"]
    assert answered(client, job)["state"] == "done"
    page = client.get(job).text
    assert 'id="cohort-table"' in page and 'id="histogram"' in page
    csv = pl.read_csv(io.BytesIO(client.get(f"{job}/predictions.csv").content))
    parquet = pl.read_parquet(io.BytesIO(client.get(f"{job}/predictions.parquet").content))
    assert csv["subject_id"].to_list() == [2, 3, 4, 5]
    assert parquet.columns[:3] == ["subject_id", "prediction_time", "boolean_value"]
    assert parquet.schema["prediction_time"] == pl.Datetime("us")
    probs = parquet["predicted_boolean_probability"].to_list()
    assert probs[0] > probs[1] and probs[2] > probs[3]  # alpha (even) above beta (odd)


@pytest.mark.parametrize("ids, message", [
    ("", "the cohort is empty"),
    ("2 x7", "not patient ids: x7"),
    ("2 999", "no events for subject 999"),
])
def test_cohort_mistakes_are_messages_on_the_page(client, ids, message):
    assert_message(cohort(client, ids, step="resolve"), message)
    assert_message(cohort(client, ids), message)


def test_model_page_is_green_for_a_signed_checkpoint_with_its_privacy_and_losses(
        settings, federated_checkpoint):
    from dataclasses import replace

    page = TestClient(create_app(replace(settings, checkpoint=federated_checkpoint)))
    html = page.get("/model").text
    assert "banner good" in html and "Verified" in html
    assert "hospital_a" in html and "2.410" in html and "rdp" in html
    assert 'id="losses"' in html and "<polyline" in html and "planted-consortium" in html


def test_tampered_checkpoint_is_red_with_the_reason_and_refuses_questions(
        settings, tampered_checkpoint):
    from dataclasses import replace

    page = TestClient(create_app(replace(settings, checkpoint=tampered_checkpoint)))
    html = page.get("/model").text
    assert "banner bad" in html and "Not verified" in html
    assert "model.safetensors does not match the hash in the model card" in html
    assert_message(ask(page, step="resolve"), "the checkpoint failed verification")


def test_cancel_stops_a_run_between_batches():
    import threading

    jobs = Jobs(threading.Lock())
    job = Job("patient", "slow", total=100)

    def work(progress):
        for _ in range(100):
            progress(1)
            time.sleep(0.01)
        return "finished"

    jobs.start(job, work)
    time.sleep(0.05)
    job.cancel()
    deadline = time.monotonic() + 5
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "cancelled" and job.done < 100 and job.result is None


def test_a_token_is_required_when_configured(settings):
    from dataclasses import replace

    guarded = TestClient(create_app(replace(settings, token="s3cret-token-123")))
    assert guarded.get("/patients", follow_redirects=False).headers["location"] == "/login"
    assert guarded.post("/login", data={"token": "wrong"}).status_code == 401
    assert guarded.post("/login", data={"token": "s3cret-token-123"}).status_code == 200
    assert guarded.get("/patients?subject_id=4").status_code == 200  # the cookie is set


def test_the_model_page_names_the_file_that_changed(settings, tampered_checkpoint):
    from dataclasses import replace

    page = TestClient(create_app(replace(settings, checkpoint=tampered_checkpoint)))
    rows = page.get("/model").text.split('id="files"')[1].split("</table>")[0]
    changed = [r for r in rows.split("<tr") if "model.safetensors" in r][0]
    assert 'class="fail"' in changed and "hash differs" in changed
    assert "vocab.json" in rows.split('class="ok"')[1]


def test_progress_past_the_estimate_shows_a_second_pass_not_a_full_bar():
    job = Job("cohort", "resampled", total=100, state="running")
    job.progress(100)
    assert job.status()["total"] == 200
    job.progress(30)
    assert job.status() | {"seconds": 0} == {"state": "running", "done": 130, "total": 200,
                                             "seconds": 0}


def test_the_model_page_shows_the_evaluation_report_as_tables_and_plots(settings, tmp_path):
    from dataclasses import replace

    report = write_evaluation(tmp_path / "eval", settings.checkpoint)
    page = TestClient(create_app(replace(settings, report=report)))
    html = page.get("/model").text
    section = html.split('id="evaluation"')[1].split("</section>")[0]
    assert "In-hospital mortality" in section and "few positives" in section
    rows = section.split("<tbody>")[1].split("</tbody>")[0].split("<tr")[1:]
    assert ["zero-shot" in rows[0], "probe k=16" in rows[1], "counts k=all" in rows[2]] == \
        [True] * 3
    assert 'class="best"' in rows[1] and "<strong>0.700 ± 0.141</strong>" in rows[1]
    assert "n/a" in rows[2] and 'id="evaluation-other"' not in html
    plot = page.get("/model/report/mortality-roc.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert 'src="/model/report/mortality-roc.png"' in section
    assert page.get("/model/report/notes.txt").status_code == 404  # only the plots it links


def test_an_evaluation_of_another_checkpoint_is_flagged(settings, tmp_path):
    from dataclasses import replace

    report = write_evaluation(tmp_path / "eval", tmp_path / "other-ckpt")
    html = TestClient(create_app(replace(settings, report=report))).get("/model").text
    assert 'id="evaluation-other"' in html and str(tmp_path / "other-ckpt") in html


def test_an_unreadable_evaluation_report_is_a_message_on_the_model_page(settings, tmp_path):
    from dataclasses import replace

    report = write_evaluation(tmp_path / "eval", settings.checkpoint)
    (report / "results.json").write_text("{not json")
    html = TestClient(create_app(replace(settings, report=report))).get("/model").text
    assert 'id="evaluation-problem"' in html and "cannot read the evaluation results" in html
    assert "Traceback" not in html
