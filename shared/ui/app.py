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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import polars as pl
from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from fedehr.shared.clinical.concepts import AmbiguousConcept
from fedehr.shared.errors import DataError, FedEHRError
from fedehr.shared.ui import charts
from fedehr.shared.ui.evaluation import plot_names, read_evaluation
from fedehr.shared.ui.jobs import Job, Jobs
from fedehr.shared.ui.model_view import model_view
from fedehr.shared.ui.timeline import patient_timeline
from fedehr.shared.ui.workspace import Resolution, Settings, Workspace

HERE = Path(__file__).parent
COOKIE = "fedehr_ui"
OPEN_PATHS = ("/login", "/static/")
MAX_SAMPLES = 1024
MAX_COHORT = 5000  # patients a predicate may select for one run
DEFAULT_LIMIT = 50
CHOICE = "choice:"  # form fields naming the family picked for an ambiguous phrase
FORM_FIELDS = ("subject_id", "subject_ids", "question", "samples", "seed", "with_code",
               "with_description", "split", "limit")


@dataclass
class Asked:
    """A question form, checked and resolved: ready to confirm or to run."""

    form: dict
    subjects: list[int]
    samples: int
    seed: int
    resolution: Resolution
    labels: pl.DataFrame  # subject_id, prediction_time
    left_out: list[str]  # why patients a predicate found cannot be asked about


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

    # -- questions: one patient or a cohort ---------------------------------------------
    def asked(fields: dict, cohort: bool) -> Asked:
        """A posted question form, checked and resolved (FedEHRError: what to fix)."""
        form = _form(settings, fields, cohort)
        n, s = _samples(form["samples"], settings), _seed(form["seed"])
        if not cohort:
            subjects = [_subject(form["subjects"])]
        elif form["subjects"].strip() and (form["code"] or form["description"]):
            raise DataError("give either patient ids or a predicate, not both",
                            where="patient ids", fix="empty one of them")
        elif form["subjects"].strip():
            subjects = _subject_list(form["subjects"])
        else:
            subjects = workspace.find_cohort(code=form["code"], description=form["description"],
                                             split=form["split"], limit=_limit(form["limit"]))
        resolution = workspace.resolve(form["question"], form["choices"])
        if cohort:
            labels, left_out = workspace.cohort_labels(
                subjects, resolution, skip_unplaced=not form["subjects"].strip())
        else:
            labels, left_out = workspace.patient_label(subjects[0], resolution), []
        return Asked(form, labels["subject_id"].to_list(), n, s, resolution, labels, left_out)

    def form_page(request: Request, fields: dict, cohort: bool,
                  exc: FedEHRError) -> HTMLResponse:
        """The form again with the message; for an ambiguous concept, its choices."""
        ambiguous = None
        if isinstance(exc, AmbiguousConcept) and exc.choices:
            ambiguous = {"phrase": exc.phrase, "name": f"{CHOICE}{exc.phrase.lower()}",
                         "options": [(family, f"{family}: {workspace.index.describe(codes[0])}"
                                      + (f" (+{len(codes) - 1} codes)" if len(codes) > 1
                                         else "")) for family, codes in exc.choices.items()]}
        return page(request, "cohort.html" if cohort else "ask.html", 400,
                    form=_form(settings, fields, cohort), error=exc.one_line(),
                    ambiguous=ambiguous, splits=workspace.splits)

    @app.get("/ask", response_class=HTMLResponse)
    def ask_form(request: Request, subject_id: str = "", question: str = ""):
        fields = {"subject_id": subject_id, "question": question}
        return page(request, "ask.html", form=_form(settings, fields, False))

    @app.get("/cohort", response_class=HTMLResponse)
    def cohort_form(request: Request):
        return page(request, "cohort.html", form=_form(settings, {}, True),
                    splits=workspace.splits)

    @app.post("/ask/resolve", response_class=HTMLResponse)
    @app.post("/cohort/resolve", response_class=HTMLResponse)
    def resolve(request: Request, fields: dict = Depends(_fields)):
        cohort = request.url.path.startswith("/cohort")
        try:
            q = asked(fields, cohort)
        except FedEHRError as exc:
            return form_page(request, fields, cohort, exc)
        if cohort:
            what = (f"a cohort of {len(q.subjects)} patients, each at its latest index event "
                    "(or last event)")
            if q.left_out:
                what += (f"; {len(q.left_out)} patients the predicate found are left out "
                         f"({q.left_out[0]}{', ...' if len(q.left_out) > 1 else ''})")
        else:
            what = (f"patient {q.subjects[0]}, prediction time "
                    f"{q.labels['prediction_time'][0]:%Y-%m-%d %H:%M}")
        return page(request, "confirm.html", form=q.form, resolution=q.resolution,
                    action="/cohort/run" if cohort else "/ask/run", what=what,
                    samples=q.samples, seed=q.seed, cohort=cohort,
                    carry=_carry(fields))

    @app.post("/ask/run")
    @app.post("/cohort/run")
    def run(request: Request, fields: dict = Depends(_fields)):
        cohort = request.url.path.startswith("/cohort")
        try:
            q = asked(fields, cohort)
            audit = workspace.record_question(q.resolution, patients=q.subjects,
                                              samples=q.samples, seed=q.seed,
                                              predicate=_predicate(q.form))
        except FedEHRError as exc:
            return form_page(request, fields, cohort, exc)
        context = {"resolution": q.resolution, "audit": audit, "samples": q.samples,
                   "seed": q.seed, "form": q.form}
        question = q.resolution.question
        if cohort:
            job = Job("cohort", f"Cohort of {len(q.subjects)}: {question}",
                      total=q.samples * len(q.subjects), context=context)
            jobs.start(job, lambda progress: workspace.answer_cohort(
                q.resolution, q.labels, samples=q.samples, seed=q.seed, progress=progress))
        else:
            groups = settings.explain_groups
            job = Job("patient", f"Patient {q.subjects[0]}: {question}",
                      total=q.samples * (groups + 2), context=context)
            jobs.start(job, lambda progress: workspace.answer_one(
                q.resolution, q.subjects[0], samples=q.samples, seed=q.seed,
                explain_groups=groups, progress=progress))
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
        evaluation, problem = None, ""
        if settings.report is not None:
            try:
                evaluation = read_evaluation(settings.report, settings.checkpoint)
            except FedEHRError as exc:  # the report changed since the server started
                problem = exc.one_line()
        return page(request, "model.html", view=view, evaluation=evaluation,
                    evaluation_problem=problem,
                    chart=charts.line_chart(view.losses) if view.losses else "")

    @app.get("/model/report/{name}")
    def report_plot(name: str):
        if settings.report is None or name not in plot_names(settings.report):
            return Response("no such plot in the evaluation report", status_code=404,
                            media_type="text/plain")
        return FileResponse(Path(settings.report) / name, media_type="image/png")

    return app


# -- form fields ----------------------------------------------------------------------------

async def _fields(request: Request) -> dict[str, str]:
    """An urlencoded form body (what every form of the page posts), last value per name."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _form(settings: Settings, fields: dict, cohort: bool) -> dict:
    """What the form showed, to show it again (raw text, checked later)."""
    return {"subjects": fields.get("subject_ids" if cohort else "subject_id", ""),
            "question": fields.get("question", ""),
            "samples": fields.get("samples") or str(settings.samples),
            "seed": fields.get("seed") or "0",
            "code": fields.get("with_code", "").strip(),
            "description": fields.get("with_description", "").strip(),
            "split": fields.get("split", "").strip(),
            "limit": fields.get("limit") or str(DEFAULT_LIMIT),
            "choices": {k.removeprefix(CHOICE): v for k, v in fields.items()
                        if k.startswith(CHOICE)}}


def _carry(fields: dict) -> list[tuple[str, str]]:
    """The posted fields the confirmation passes on to the run, as hidden inputs."""
    return [(k, v) for k, v in fields.items() if k in FORM_FIELDS or k.startswith(CHOICE)]


def _predicate(form: dict) -> dict | None:
    """How a cohort was found, for the audit line (None: a list of ids, or one patient)."""
    if form["subjects"].strip() or not (form["code"] or form["description"]):
        return None
    return {"code": form["code"], "description": form["description"],
            "split": form["split"] or None, "limit": int(form["limit"])}


def _limit(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_COHORT:
        raise DataError(f"at most N patients: a whole number from 1 to {MAX_COHORT}",
                        where="at most", fix=f"e.g. {DEFAULT_LIMIT}")
    return int(text)


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
