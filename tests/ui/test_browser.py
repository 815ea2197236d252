"""The page in a real browser: Debian's chromium driven by Playwright's Python package (no
browser download). Screenshots of each page go to tests/ui/artifacts/."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from fedehr.shared.cli import main
from fedehr.shared.ui.app import create_app
from tests.ui.conftest import write_evaluation

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
QUESTION = "widget level above 1 mg/dL within 60 days after procedure"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install -e '.[dev]')")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium; .ci/run does)",
                allow_module_level=True)


def serve(app) -> tuple[str, callable]:
    """Run the app with uvicorn on a free loopback port in a thread; (url, stop)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(settings):
    url, stop = serve(create_app(settings))
    yield url
    stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100,
                                                                   "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def cli_probability(capsys, world, subject: int, question: str, seed: int) -> str:
    try:
        main(["model", "ask", "--checkpoint", str(world.checkpoint), "--data",
              str(world.dataset.root), "--patient", str(subject), "--prompt", question,
              "--samples", "8", "--seed", str(seed), "--explain", "0", "--yes"])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    out = capsys.readouterr().out
    return re.search(r"probability\s*\S?\s*([01]\.\d\d)\s+\(95% CI", out).group(1)


def test_find_the_planted_patient_ask_confirm_and_see_why(page, site, world, capsys):
    page.goto(f"{site}/patients")
    page.get_by_label("Patient id (subject_id)").fill("4")
    page.keyboard.press("Enter")
    timeline = page.locator("ol.timeline")
    assert "Alpha procedure" in timeline.inner_text() and "mg/dL" in timeline.inner_text()
    shot(page, "patients")
    page.get_by_role("link", name="Ask a question about this patient").click()
    assert page.get_by_label("Patient id (subject_id)").input_value() == "4"
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_label("Continuations").fill("8")
    page.get_by_label("Seed").fill("1")
    page.get_by_role("button", name="Check the question").click()
    resolution = page.locator("table.resolution").inner_text()
    assert "LAB//7777-7//mg/dL (Widget level [Mass/volume] in Serum)" in resolution
    assert "above 1 mg/dL" in resolution and "within 60 days" in resolution
    shot(page, "confirm")
    page.get_by_role("button", name="Yes, use these codes and ask").click()
    page.locator("#probability").wait_for()
    shown = page.locator("#probability strong").inner_text()
    assert shown == cli_probability(capsys, world, 4, QUESTION, seed=1)
    assert "audit log" in page.locator("#audited").inner_text()
    chart = page.locator("#explanation svg")
    assert chart.is_visible() and chart.locator("rect.bar").count() >= 1
    shot(page, "answer")


def test_an_ambiguous_concept_is_chosen_with_the_keyboard(page, odd_client):
    url, stop = serve(odd_client.app)
    try:
        page.goto(f"{url}/ask?subject_id=4")
        page.get_by_label("Question").fill("cardiac arrest within 1 day after procedure")
        page.get_by_role("button", name="Check the question").click()
        assert "matches 2 concepts" in page.get_by_role("alert").inner_text()
        alpha = page.get_by_role("radio", name="SNOMEDCT/1001: Alpha procedure")
        shot(page, "choices")
        page.keyboard.press("Space")  # the first choice has the focus
        assert alpha.is_checked()
        page.keyboard.press("Enter")
        resolution = page.locator("table.resolution").inner_text()
        assert "PROC//ALPHA (Alpha procedure)" in resolution and "PROC//BETA" not in resolution
        assert "SNOMEDCT/1001" in page.locator("#chosen").inner_text()
    finally:
        stop()


def test_cohort_table_sorts_and_its_csv_downloads(page, site):
    page.goto(f"{site}/cohort")
    page.get_by_label("Patient ids").fill("2 3 4 5 6 7")
    page.get_by_label("Question").fill("cardiac arrest within 1 day after procedure")
    page.get_by_label("Continuations").fill("8")
    page.get_by_role("button", name="Check the question").click()
    page.get_by_role("button", name="Yes, use these codes and ask").click()
    table = page.locator("#cohort-table")
    table.wait_for()
    assert page.locator("#histogram svg").is_visible()
    page.get_by_role("button", name="probability").click()
    page.get_by_role("button", name="probability").click()  # descending: alpha first
    first = table.locator("tbody tr").first.locator("td").first.inner_text()
    assert int(first) % 2 == 0
    shot(page, "cohort")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    frame = pl.read_csv(download.value.path())
    assert sorted(frame["subject_id"].to_list()) == [2, 3, 4, 5, 6, 7]
    assert {"prediction_time", "boolean_value", "predicted_boolean_probability"} <= \
        set(frame.columns)


def test_an_empty_cohort_is_a_message_not_a_trace(page, site):
    page.goto(f"{site}/cohort")
    page.get_by_label("Question").fill("cardiac arrest within 1 day after procedure")
    page.get_by_role("button", name="Check the question").click()
    assert "the cohort is empty" in page.get_by_role("alert").inner_text()


def test_model_page_green_for_a_federated_checkpoint(page, settings, federated_checkpoint,
                                                     tmp_path):
    report = write_evaluation(tmp_path / "eval", federated_checkpoint)
    url, stop = serve(create_app(replace(settings, checkpoint=federated_checkpoint,
                                         report=report)))
    try:
        page.goto(f"{url}/model")
        assert "Verified" in page.locator("#verdict").inner_text()
        assert page.locator("#losses svg").is_visible()
        assert "hospital_b" in page.locator("#privacy").inner_text()
        best = page.locator("#evaluation tr.best")
        assert "probe k=16" in best.inner_text() and best.locator("strong").is_visible()
        shot(page, "model")
    finally:
        stop()


def test_model_page_red_with_the_reason_for_a_tampered_checkpoint(page, settings,
                                                                   tampered_checkpoint):
    url, stop = serve(create_app(replace(settings, checkpoint=tampered_checkpoint)))
    try:
        page.goto(f"{url}/model")
        verdict = page.locator("#verdict")
        assert "Not verified" in verdict.inner_text()
        assert "model.safetensors does not match the hash" in verdict.inner_text()
        colour = verdict.evaluate("e => getComputedStyle(e).color")
        assert colour == "rgb(155, 28, 28)"  # the red of .banner.bad
        shot(page, "model-tampered")
    finally:
        stop()
