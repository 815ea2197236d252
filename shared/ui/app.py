"""`fedehr ui`'s web application: Patients, Ask, Cohort and Model pages.

Server-rendered HTML (Jinja2 templates and one stylesheet and script served from
this package; nothing is fetched from the internet). Every form error a user can
cause comes back as the same page with the message, status 400, never a
traceback. Sampling runs as a job (jobs.py) whose page polls its progress.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from fedehr.shared.errors import DataError, FedEHRError
from fedehr.shared.ui import charts
from fedehr.shared.ui.jobs import Job, Jobs
from fedehr.shared.ui.model_view import model_view
from fedehr.shared.ui.timeline import patient_timeline
from fedehr.shared.ui.workspace import Settings, Workspace

HERE = Path(__file__).parent
COOKIE = "fedehr_ui"
OPEN_PATHS = ("/login", "/static/")
MAX_SAMPLES = 1024


def create_app(settings: Settings) -> FastAPI:
    workspace = Workspace(settings)
    jobs = Jobs(workspace.model_lock)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(title="fedehr", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.workspace, app.state.jobs = workspace, jobs

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        context.setdefault("error", "")
        return templates.TemplateResponse(request, name, {"settings": settings,
                                                          "problem": workspace.load_problem,
                                                          **context}, status_code=status)

    # -- login (only when a token is configured) ---------------------------------------
    session = (hmac.new(settings.token.encode(), b"fedehr-ui-session", hashlib.sha256)
               .hexdigest() if settings.token else None)

    @app.middleware("http")
    async def require_login(request: Request, call_next):
        if session and not request.url.path.startswith(OPEN_PATHS):
            if not hmac.compare_digest(request.cookies.get(COOKIE, ""), session):
                return RedirectResponse("/login", status_code=303)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request):
        return page(request, "login.html")

    @app.post("/login")
    def login(request: Request, fields: dict = Depends(_fields)):
        token = fields.get("token", "")
        if not session or not hmac.compare_digest(token.strip().encode(),
                                                  (settings.token or "").encode()):
            return page(request, "login.html", 401, error="wrong access token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict",
                            secure=settings.secure_cookie)
        return response

    # -- patients ----------------------------------------------------------------------
    @app.get("/")
    def home():
        return RedirectResponse("/patients", status_code=303)

    @app.get("/patients", response_class=HTMLResponse)
    def patients(request: Request, subject_id: str = ""):
        if not subject_id.strip():
            return page(request, "patients.html", subject_id="", timeline=None)
        try:
            timeline = patient_timeline(workspace.dataset, workspace.index,
                                        _subject(subject_id))
        except FedEHRError as exc:
            return page(request, "patients.html", 400, subject_id=subject_id, timeline=None,
                        error=exc.one_line())
        return page(request, "patients.html", subject_id=subject_id, timeline=timeline)

    # -- ask: one patient ----------------------------------------------------------------
    @app.get("/ask", response_class=HTMLResponse)
    def ask_form(request: Request, subject_id: str = "", question: str = ""):
        return page(request, "ask.html", form=_form(settings, subject_id, question))

    @app.post("/ask/resolve", response_class=HTMLResponse)
    def ask_resolve(request: Request, fields: dict = Depends(_fields)):
        subject_id, question, samples, seed = _question_fields(fields, "subject_id")
        form = _form(settings, subject_id, question, samples, seed)
        try:
            subject = _subject(subject_id)
            n, s = _samples(samples, settings), _seed(seed)
            resolution = workspace.resolve(question)
            when = workspace.prediction_time(subject, resolution)
        except FedEHRError as exc:
            return page(request, "ask.html", 400, form=form, error=exc.one_line())
        return page(request, "confirm.html", form=form, resolution=resolution, action="/ask/run",
                    what=f"patient {subject}, prediction time {when:%Y-%m-%d %H:%M}",
                    samples=n, seed=s)

    @app.post("/ask/run")
    def ask_run(request: Request, fields: dict = Depends(_fields)):
        subject_id, question, samples, seed = _question_fields(fields, "subject_id")
        form = _form(settings, subject_id, question, samples, seed)
        try:
            subject, n, s = _subject(subject_id), _samples(samples, settings), _seed(seed)
            resolution = workspace.resolve(question)
            workspace.prediction_time(subject, resolution)
            audit = workspace.record_question(resolution, patients=[subject], samples=n, seed=s)
        except FedEHRError as exc:
            return page(request, "ask.html", 400, form=form, error=exc.one_line())
        groups = settings.explain_groups
        job = Job("patient", f"Patient {subject}: {resolution.question}",
                  total=n * (groups + 2), context={"resolution": resolution, "audit": audit,
                                                   "samples": n, "seed": s, "form": form})
        jobs.start(job, lambda progress: workspace.answer_one(
            resolution, subject, samples=n, seed=s, explain_groups=groups, progress=progress))
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    # -- cohort ------------------------------------------------------------------------
    @app.get("/cohort", response_class=HTMLResponse)
    def cohort_form(request: Request):
        return page(request, "cohort.html", form=_form(settings, "", ""))

    @app.post("/cohort/resolve", response_class=HTMLResponse)
    def cohort_resolve(request: Request, fields: dict = Depends(_fields)):
        subject_ids, question, samples, seed = _question_fields(fields, "subject_ids")
        form = _form(settings, subject_ids, question, samples, seed)
        try:
            subjects = _subject_list(subject_ids)
            n, s = _samples(samples, settings), _seed(seed)
            resolution = workspace.resolve(question)
            workspace.cohort_labels(subjects, resolution)
        except FedEHRError as exc:
            return page(request, "cohort.html", 400, form=form, error=exc.one_line())
        return page(request, "confirm.html", form=form, resolution=resolution,
                    action="/cohort/run", what=f"a cohort of {len(subjects)} patients, each at "
                    "its latest index event (or last event)", samples=n, seed=s, cohort=True)

    @app.post("/cohort/run")
    def cohort_run(request: Request, fields: dict = Depends(_fields)):
        subject_ids, question, samples, seed = _question_fields(fields, "subject_ids")
        form = _form(settings, subject_ids, question, samples, seed)
        try:
            subjects = _subject_list(subject_ids)
            n, s = _samples(samples, settings), _seed(seed)
            resolution = workspace.resolve(question)
            labels = workspace.cohort_labels(subjects, resolution)
            audit = workspace.record_question(resolution, patients=subjects, samples=n, seed=s)
        except FedEHRError as exc:
            return page(request, "cohort.html", 400, form=form, error=exc.one_line())
        job = Job("cohort", f"Cohort of {len(subjects)}: {resolution.question}",
                  total=n * len(subjects), context={"resolution": resolution, "audit": audit,
                                                    "samples": n, "seed": s, "form": form})
        jobs.start(job, lambda progress: workspace.answer_cohort(
            resolution, labels, samples=n, seed=s, progress=progress))
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    # -- jobs ------------------------------------------------------------------------------
    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str):
        job = jobs.get(job_id)
        if job is None:
            return page(request, "job.html", 404, job=None,
                        error="no such run (the server keeps the latest 50 since it started)")
        extra = {}
        if job.state == "done" and job.kind == "patient":
            expl = job.result["explanation"]
            extra["chart"] = charts.influence_chart(expl.moved[:8]) if expl and expl.moved \
                else ""
        if job.state == "done" and job.kind == "cohort":
            frame = job.result["frame"]
            extra["chart"] = charts.histogram(frame["predicted_boolean_probability"].to_list())
            extra["rows"] = [dict(r, decided=d) for r, d in
                             zip(frame.iter_rows(named=True), job.result["decided"],
                                 strict=True)]
        return page(request, "job.html", job=job, **job.context, **extra)

    @app.get("/jobs/{job_id}/status")
    def job_status(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            return JSONResponse({"state": "missing"}, status_code=404)
        return job.status()

    @app.post("/jobs/{job_id}/cancel")
    def job_cancel(job_id: str):
        job = jobs.get(job_id)
        if job is not None:
            job.cancel()
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/jobs/{job_id}/predictions.{fmt}")
    def job_download(job_id: str, fmt: str):
        job = jobs.get(job_id)
        if job is None or job.kind != "cohort" or job.state != "done" or \
                fmt not in ("csv", "parquet"):
            return Response("no finished cohort run with that id", status_code=404,
                            media_type="text/plain")
        buffer = io.BytesIO()
        frame = job.result["frame"]
        if fmt == "csv":
            frame.write_csv(buffer)
            media = "text/csv"
        else:
            frame.write_parquet(buffer)
            media = "application/vnd.apache.parquet"
        return Response(buffer.getvalue(), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="predictions-{job_id}.{fmt}"'})

    # -- model -----------------------------------------------------------------------------
    @app.get("/model", response_class=HTMLResponse)
    def model(request: Request):
        view = model_view(settings.checkpoint, settings.trusted_key)
        return page(request, "model.html", view=view,
                    chart=charts.line_chart(view.losses) if view.losses else "")

    return app


# -- form fields ----------------------------------------------------------------------------

async def _fields(request: Request) -> dict[str, str]:
    """An urlencoded form body (what every form of the page posts), last value per name."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _question_fields(fields: dict, subjects: str) -> tuple[str, str, str, str]:
    return (fields.get(subjects, ""), fields.get("question", ""), fields.get("samples", ""),
            fields.get("seed", "0"))


def _form(settings: Settings, subjects: str, question: str, samples: str = "",
          seed: str = "0") -> dict:
    return {"subjects": subjects, "question": question,
            "samples": samples or str(settings.samples), "seed": seed or "0"}


def _subject(text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"\d{1,18}", text):
        raise DataError(f"{text!r} is not a patient id" if text else "no patient id given",
                        where="patient id", fix="type the subject_id, a whole number")
    return int(text)


def _subject_list(text: str) -> list[int]:
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    bad = [p for p in parts if not re.fullmatch(r"\d{1,18}", p)]
    if bad:
        raise DataError(f"not patient ids: {', '.join(bad[:5])}", where="patient ids",
                        fix="list subject_ids separated by spaces, commas or lines")
    return list(dict.fromkeys(int(p) for p in parts))


def _samples(text: str, settings: Settings) -> int:
    text = (text or str(settings.samples)).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_SAMPLES:
        raise DataError(f"continuations must be a whole number from 1 to {MAX_SAMPLES}",
                        where="continuations", fix="e.g. 32")
    return int(text)


def _seed(text: str) -> int:
    text = (text or "0").strip()
    if not text.isdigit():
        raise DataError("the seed must be a whole number", where="seed", fix="e.g. 0")
    return int(text)
