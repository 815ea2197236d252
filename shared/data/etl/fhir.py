"""HL7 FHIR R4 JSON -> MEDS: per-patient bundles (Synthea's shape) and NDJSON bulk exports.

What a German university hospital exports (the Medical Informatics Initiative core data
set: Condition with ICD-10-GM, Procedure with OPS, Observation with LOINC and UCUM,
MedicationStatement with ATC, DocumentReference letters) and what Synthea writes both
arrive here; docs/etl-fhir.md lists every mapping, code prefix and drop reason.

Input: a folder (searched recursively) or one file. ``*.json`` / ``*.json.gz`` hold a
Bundle (its entries are read) or one resource; ``*.ndjson`` / ``*.ndjson.gz`` hold one
resource per line, as a server's ``$export`` writes them. Two passes: the first reads
only Patient and Medication resources (patients must be known before their events; a
MedicationStatement may name its drug through a Medication), the second everything else.
NDJSON is streamed line by line and events go to `MEDSWriter` in chunks of `chunk_rows`,
so a bulk export never sits in memory; a bundle file is parsed whole (one patient).

Codes keep their system as a prefix (`SYSTEM_PREFIXES`): ``ICD10GM/I50.01``,
``OPS/5-361.03``, ``LOINC/2160-0//mg/dL`` (numeric with its UCUM unit; parent
``LOINC/2160-0``, as the Synthea ETL writes it), ``ATC/C03CA01``, ``RxNorm/197361``,
``SNOMEDCT/44054006``, ``CVX/140``; an unknown system becomes
``LOCAL//<system without scheme>//<code>``. subject_id is `stable_subject_id(Patient.id)`,
so a Synthea patient gets the same subject_id from its CSV and its FHIR export.

Bad input is counted under ``"<resourceType>: <reason>"`` with the first place it was met
(``file:line`` for NDJSON, ``file:entry N`` for a bundle); the import never stops on a
bad resource, and `MEDSWriter` makes it atomic.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import polars as pl
from rich.progress import Progress

from fedehr.shared.data import schema as S
from fedehr.shared.data.etl.source import finish_summary, stable_subject_id
from fedehr.shared.data.etl.summary import ImportSummary
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import DataError

log = logging.getLogger(__name__)

ETL_NAME = "fedehr.fhir"
SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz")
UNKNOWN = "unknown"

# Code system URI -> prefix. ICD-10-GM, OPS and ATC under both the BfArM and the older
# DIMDI namespaces the MII profiles have used.
SYSTEM_PREFIXES = {
    "http://fhir.de/CodeSystem/bfarm/icd-10-gm": "ICD10GM",
    "http://fhir.de/CodeSystem/dimdi/icd-10-gm": "ICD10GM",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://fhir.de/CodeSystem/bfarm/ops": "OPS",
    "http://fhir.de/CodeSystem/dimdi/ops": "OPS",
    "http://snomed.info/sct": "SNOMEDCT",
    "http://loinc.org": "LOINC",
    "http://fhir.de/CodeSystem/bfarm/atc": "ATC",
    "http://fhir.de/CodeSystem/dimdi/atc": "ATC",
    "http://www.whocc.no/atc": "ATC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://fhir.de/CodeSystem/ifa/pzn": "PZN",
    "http://hl7.org/fhir/sid/ndc": "NDC",
}
# A coding of these systems is preferred when a concept carries several.
PREFERRED = ("ICD10GM", "ICD10CM", "OPS", "LOINC", "ATC", "RxNorm", "SNOMEDCT", "CVX")
UCUM = "http://unitsofmeasure.org"
# Encounter.class (v3 ActCode) -> the class words of the Synthea CSV export.
ENCOUNTER_CLASSES = {"IMP": "inpatient", "ACUTE": "inpatient", "NONAC": "inpatient",
                     "EMER": "emergency", "AMB": "ambulatory", "SS": "short-stay",
                     "HH": "home", "VR": "virtual", "PRENC": "pre-admission",
                     "OBSENC": "observation"}
ADMISSION_CLASSES = ("inpatient",)
# ICU stays: a department (DKG Fachabteilungsschluessel 36xx, Intensivmedizin, as the MII
# Encounter profile carries it in serviceType) or a location whose physicalType is the
# v3 RoleCode ICU.
ICU_DEPARTMENT_SYSTEM = "fachabteilungsschluessel"
ICU_DEPARTMENT_PREFIX = "36"
ICU_ROLE_CODE = "ICU"
# LOINC document types that are discharge letters -> the note code the model knows.
DISCHARGE_LETTERS = {"18842-5", "11490-0", "34105-7", "34745-0"}
DISCHARGE_NOTE = "NOTE//DISCHARGE_SUMMARY"
GENDER = {"male": "M", "female": "F", "other": "O"}

# Drop reasons (after "<resourceType>: ").
BAD_JSON = "malformed JSON (truncated or invalid)"
TRUNCATED = "file cut short (gzip stream ended early)"
NOT_A_RESOURCE = "not a FHIR resource (no resourceType)"
NO_ID = "Patient without id"
NO_SUBJECT = "no subject reference"
MISSING_PATIENT = "reference to a missing patient"
NOT_IMPORTED = "resource type not imported"
BAD_DATE = "malformed date"
NO_DATE = "no date"
NO_CODE = "no code"
BAD_ATTACHMENT = "attachment not readable as text"

_RESOURCE_TYPE = re.compile(rb'"resourceType"\s*:\s*"(Patient|Medication)"')
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2})?$")
_ICD_MARKS = str.maketrans("", "", "!*+†")

Event = tuple[int, datetime | None, str, float | None, str | None]


class _Bad(Exception):
    """A resource that cannot be imported, with the reason it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- codes and times -------------------------------------------------------------------


def system_prefix(system: str | None) -> str:
    """The code prefix of a coding system URI (`SYSTEM_PREFIXES`, else LOCAL//<system>)."""
    if not system:
        return "LOCAL//" + UNKNOWN
    known = SYSTEM_PREFIXES.get(system.rstrip("/"))
    if known:
        return known
    return "LOCAL//" + re.sub(r"^[a-z][a-z0-9+.-]*:/*", "", system.strip(), flags=re.I)


def coded(coding: dict) -> tuple[str, str | None, str | None] | None:
    """(code, description, standard parent) of one Coding, or None without a code."""
    value = str(coding.get("code") or "").strip()
    if not value:
        return None
    prefix = system_prefix(coding.get("system"))
    parent = None
    if prefix == "ICD10GM":
        value = value.translate(_ICD_MARKS)
        # ICD-10-GM and ICD-10-CM agree at the WHO level (3 characters + 1 after the dot).
        parent = f"ICD10CM/{value[:5].rstrip('.')}"
    separator = "//" if prefix.startswith("LOCAL//") else "/"
    return f"{prefix}{separator}{value}", coding.get("display"), parent


def concept(cc: dict | None) -> tuple[str, str | None, str | None] | None:
    """The Coding of a CodeableConcept to use: the first of a `PREFERRED` system, else the
    first with a code."""
    if not isinstance(cc, dict):
        return None
    codings = [c for c in (coded(x) for x in cc.get("coding") or () if isinstance(x, dict))
               if c is not None]
    if not codings:
        return None
    for prefix in PREFERRED:
        for c in codings:
            if c[0].startswith(prefix + "/"):
                return c[0], c[1] or cc.get("text"), c[2]
    code, desc, parent = codings[0]
    return code, desc or cc.get("text"), parent


def parse_time(value: object) -> datetime:
    """A FHIR date or dateTime as naive UTC; a partial date (2020, 2020-03) is its first day.
    Raises `_Bad(BAD_DATE)` when it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise _Bad(BAD_DATE)
    text = value.strip()
    if _PARTIAL_DATE.match(text):
        text = text + "-01" * (3 - len(text.split("-")))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(BAD_DATE) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _first_time(resource: dict, *fields: str) -> datetime:
    """The first of `fields` present (``"x.start"`` reads a Period); NO_DATE if none."""
    for name in fields:
        head, _, sub = name.partition(".")
        value = resource.get(head)
        if sub and isinstance(value, dict):
            value = value.get(sub)
        if value not in (None, ""):
            return parse_time(value)
    raise _Bad(NO_DATE)


def _reference_id(reference: object) -> str | None:
    """``Patient/123``, ``urn:uuid:...`` or an absolute URL ending in ``Patient/123`` -> id."""
    if isinstance(reference, dict):
        reference = reference.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        return None
    ref = reference.strip()
    if ref.startswith("urn:uuid:"):
        return ref[len("urn:uuid:"):]
    return ref.rstrip("/").split("/")[-1] or None


def attachment_text(attachment: dict) -> str | None:
    """The text of an inline attachment (base64 ``data`` of a text/* type); None when the
    attachment has no inline data; `_Bad(BAD_ATTACHMENT)` when it is not readable text."""
    data = attachment.get("data")
    if not data:
        return None
    content_type = str(attachment.get("contentType") or "text/plain").lower()
    if not content_type.startswith("text/"):
        raise _Bad(BAD_ATTACHMENT)
    charset = re.search(r"charset=([\w.-]+)", content_type)
    try:
        raw = base64.b64decode(data, validate=True)
        return raw.decode(charset.group(1) if charset else "utf-8").strip() or None
    except (binascii.Error, UnicodeDecodeError, LookupError):
        raise _Bad(BAD_ATTACHMENT) from None


# -- reading files ---------------------------------------------------------------------


def _files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DataError("no such file or folder", where=str(src),
                        fix="give the folder of FHIR bundles or of an NDJSON bulk export")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise DataError("no FHIR files found (*.json, *.ndjson, optionally .gz)",
                        where=str(src),
                        fix="give the folder of FHIR bundles or of an NDJSON bulk export")
    return files


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


class _Import:
    """One conversion: the patients and medications known, the codes seen, the buffer."""

    def __init__(self, root: Path, writer: MEDSWriter, summary: ImportSummary,
                 chunk_rows: int, progress: Progress | None):
        self.root = root
        self.writer = writer
        self.summary = summary
        self.chunk_rows = chunk_rows
        self.progress = progress
        self.patients: dict[str, int] = {}  # Patient.id -> subject_id
        self.medications: dict[str, dict] = {}  # Medication.id -> its code
        self.codes: dict[str, tuple[str | None, str | None]] = {}  # code -> (desc, parent)
        self.buffer: list[Event] = []
        self.bad_files: set[Path] = set()
        self.handlers: dict[str, Callable[[dict], list[Event]]] = {
            "Encounter": self.encounter,
            "Condition": self.condition,
            "Procedure": self.procedure,
            "Observation": self.observation,
            "MedicationRequest": self.medication_request,
            "MedicationAdministration": self.medication_event,
            "MedicationStatement": self.medication_event,
            "Immunization": self.immunization,
            "DiagnosticReport": self.diagnostic_report,
            "AllergyIntolerance": self.allergy,
            "DocumentReference": self.document,
        }

    def label(self, path: Path) -> str:
        return str(path.relative_to(self.root) if path.is_relative_to(self.root) else path)

    # passes -------------------------------------------------------------------------
    def run(self, files: list[Path]) -> None:
        for first in (True, False):
            label = "patients" if first else "resources"
            task = self.progress.add_task(f"fhir {label}", total=len(files)) \
                if self.progress is not None else None
            for path in files:
                if path not in self.bad_files:
                    self.read_file(path, first)
                if task is not None:
                    self.progress.advance(task)
        self.flush()
        self.code_metadata()

    def read_file(self, path: Path, first: bool) -> None:
        ndjson = path.name.endswith((".ndjson", ".ndjson.gz"))
        label = self.label(path)
        try:
            with _open(path) as fh:
                if ndjson:
                    for number, line in enumerate(fh, start=1):
                        if not line.strip():
                            continue
                        # Only lines naming a Patient or Medication can hold one: the first
                        # pass parses just those; the second parses every line.
                        named = bool(_RESOURCE_TYPE.search(line))
                        if first and not named:
                            continue
                        self.read_line(label, number, line, first, seen_before=named and not first)
                else:
                    self.read_json(path, label, fh.read(), first)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            # NDJSON: the lines before the cut are imported (by both passes); a bundle is
            # skipped whole. Counted once, in the first pass.
            if first:
                log.warning("%s: %s", path, exc)
                self.summary.drop_in("file", TRUNCATED, where=f"{label}:end")
                if not ndjson:
                    self.bad_files.add(path)

    def read_line(self, label: str, number: int, line: bytes, first: bool,
                  seen_before: bool) -> None:
        """One NDJSON line; `seen_before`: the first pass parsed it (and counted any error)."""
        try:
            document = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if not seen_before:
                self.summary.rows_read += 1
                self.summary.drop_in("file", BAD_JSON, where=f"{label}:{number}")
            return
        for entry in _entries(document):
            self.dispatch(entry, label, number, first)

    def read_json(self, path: Path, label: str, data: bytes, first: bool) -> None:
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if first:
                self.bad_files.add(path)
                line = getattr(exc, "lineno", 1)
                self.summary.rows_read += 1
                self.summary.drop_in("file", BAD_JSON, where=f"{label}:{line}")
            return
        for i, entry in enumerate(_entries(document)):
            self.dispatch(entry, label, f"entry {i}", first)

    def dispatch(self, entry: object, label: str, place: int | str, first: bool) -> None:
        """Hand `entry` to `resource` in its pass: Patient and Medication in the first."""
        kind = entry.get("resourceType") if isinstance(entry, dict) else None
        if first == (kind in ("Patient", "Medication")):
            self.summary.rows_read += 1
            self.resource(entry, label, place, first)

    # one resource -------------------------------------------------------------------
    def resource(self, resource: object, label: str, place: int | str, first: bool) -> None:
        """Map one resource; `label` and `place` (line or bundle entry) say where it is."""
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(kind, str) or not kind:
            self.summary.drop_in("resource", NOT_A_RESOURCE, where=f"{label}:{place}")
            return
        try:
            if first:
                events = self.patient(resource) if kind == "Patient" else self.medication(
                    resource)
            else:
                handler = self.handlers.get(kind)
                if handler is None:
                    raise _Bad(f"{NOT_IMPORTED} ({kind})")
                events = handler(resource)
        except _Bad as bad:
            self.summary.drop_in(kind, bad.reason, where=f"{label}:{place}")
            return
        self.summary.tables[kind] = self.summary.tables.get(kind, 0) + 1
        if events:
            self.buffer.extend(events)
            if len(self.buffer) >= self.chunk_rows:
                self.flush()

    def subject(self, resource: dict, field: str = "subject") -> int:
        ref = resource.get(field) or (resource.get("patient") if field == "subject" else None)
        key = _reference_id(ref)
        if key is None:
            raise _Bad(NO_SUBJECT)
        sid = self.patients.get(key.lower())
        if sid is None:
            raise _Bad(MISSING_PATIENT)
        return sid

    def code(self, cc: dict | None, *, wrap: str = "", description_prefix: str = "") -> str:
        found = concept(cc)
        if found is None:
            raise _Bad(NO_CODE)
        code, desc, parent = found
        if wrap:
            self.remember(code, desc, parent)
            parent, code = code, wrap + code
            desc = description_prefix + desc if desc else None
        self.remember(code, desc, parent)
        return code

    def remember(self, code: str, desc: str | None, parent: str | None) -> None:
        known = self.codes.get(code)
        if known is None or (known[0] is None and desc):
            self.codes[code] = (desc, parent if known is None else known[1] or parent)

    # first pass ---------------------------------------------------------------------
    def patient(self, r: dict) -> list[Event]:
        key = str(r.get("id") or "").strip().lower()
        if not key:
            raise _Bad(NO_ID)
        sid = self.patients.setdefault(key, stable_subject_id(key))
        events: list[Event] = []
        gender = GENDER.get(str(r.get("gender") or "").lower())
        if gender:
            events.append((sid, None, f"GENDER//{gender}", None, None))
        if r.get("birthDate"):
            events.append((sid, parse_time(r["birthDate"]), S.BIRTH_CODE, None, None))
        if r.get("deceasedDateTime"):
            events.append((sid, parse_time(r["deceasedDateTime"]), S.DEATH_CODE, None, None))
        return events

    def medication(self, r: dict) -> list[Event]:
        if r.get("id"):
            self.medications[str(r["id"])] = r.get("code") or {}
        return []

    # second pass --------------------------------------------------------------------
    def encounter(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        start = _first_time(r, "period.start")
        cls_coding = r.get("class") if isinstance(r.get("class"), dict) else {}
        raw = str(cls_coding.get("code") or UNKNOWN)
        cls = ENCOUNTER_CLASSES.get(raw.upper(), raw.lower())
        end = _first_time(r, "period.end") if (r.get("period") or {}).get("end") else None
        events: list[Event] = []
        unit = _icu_unit(r)
        if unit is not None:
            events.append((sid, start, f"ICU_ADMISSION//{unit}", None, None))
            if end is not None:
                events.append((sid, end, f"ICU_DISCHARGE//{unit}", None, None))
        if r.get("partOf"):
            return events  # a department or ward contact inside a stay: only its ICU events
        events.append((sid, start, f"ENCOUNTER//{cls}", None, None))
        if end is not None:
            events.append((sid, end, f"ENCOUNTER_END//{cls}", None, None))
        if cls in ADMISSION_CLASSES:
            events.append((sid, start, f"HOSPITAL_ADMISSION//{cls}", None, None))
            if end is not None:
                events.append((sid, end, f"HOSPITAL_DISCHARGE//{cls}", None, None))
        return events

    def condition(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        code = self.code(r.get("code"))
        return [(sid, _first_time(r, "onsetDateTime", "onsetPeriod.start", "recordedDate"),
                 code, None, None)]

    def procedure(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        code = self.code(r.get("code"))
        return [(sid, _first_time(r, "performedDateTime", "performedPeriod.start"), code,
                 None, None)]

    def observation(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        time = _first_time(r, "effectiveDateTime", "effectivePeriod.start", "effectiveInstant",
                           "issued")
        parts = [c for c in r.get("component") or () if isinstance(c, dict)]
        if parts and not _has_value(r):
            return [self._observed(sid, time, c) for c in parts]  # blood pressure: one each
        return [self._observed(sid, time, r)]

    def _observed(self, sid: int, time: datetime, r: dict) -> Event:
        found = concept(r.get("code"))
        if found is None:
            raise _Bad(NO_CODE)
        code, desc, parent = found
        quantity = r.get("valueQuantity")
        if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
            unit = (quantity.get("code") if quantity.get("system") == UCUM else None) \
                or quantity.get("unit") or quantity.get("code")
            if unit:
                self.remember(code, desc, parent)
                self.remember(f"{code}//{unit}", f"{desc} ({unit})" if desc else None, code)
                code = f"{code}//{unit}"
            else:
                self.remember(code, desc, parent)
            return sid, time, code, float(quantity["value"]), None
        self.remember(code, desc, parent)
        text = None
        if isinstance(r.get("valueCodeableConcept"), dict):
            value = r["valueCodeableConcept"]
            codings = value.get("coding") or [{}]
            text = codings[0].get("display") or value.get("text") or codings[0].get("code")
        elif r.get("valueString") is not None:
            text = str(r["valueString"])
        elif r.get("valueBoolean") is not None:
            text = str(r["valueBoolean"]).lower()
        elif isinstance(r.get("valueInteger"), int):
            return sid, time, code, float(r["valueInteger"]), None
        return sid, time, code, None, text

    def _drug(self, r: dict) -> dict | None:
        if isinstance(r.get("medicationCodeableConcept"), dict):
            return r["medicationCodeableConcept"]
        ref = _reference_id(r.get("medicationReference"))
        return self.medications.get(ref) if ref else None

    def medication_request(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        code = self.code(self._drug(r))
        return [(sid, _first_time(r, "authoredOn"), code, None, None)]

    def medication_event(self, r: dict) -> list[Event]:
        """MedicationAdministration and MedicationStatement: start, and end when given."""
        sid = self.subject(r)
        code = self.code(self._drug(r))
        start = _first_time(r, "effectiveDateTime", "effectivePeriod.start", "dateAsserted")
        events: list[Event] = [(sid, start, code, None, None)]
        end = (r.get("effectivePeriod") or {}).get("end")
        if end:
            desc = self.codes.get(code, (None, None))[0]
            self.remember(f"MEDICATION_END//{code}", f"End of {desc}" if desc else None, code)
            events.append((sid, parse_time(end), f"MEDICATION_END//{code}", None, None))
        return events

    def immunization(self, r: dict) -> list[Event]:
        sid = self.subject(r, "patient")
        code = self.code(r.get("vaccineCode"))
        return [(sid, _first_time(r, "occurrenceDateTime", "recorded"), code, None, None)]

    def allergy(self, r: dict) -> list[Event]:
        sid = self.subject(r, "patient")
        code = self.code(r.get("code"), wrap="ALLERGY//", description_prefix="Allergy: ")
        return [(sid, _first_time(r, "recordedDate", "onsetDateTime"), code, None, None)]

    def diagnostic_report(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        time = _first_time(r, "effectiveDateTime", "effectivePeriod.start", "issued")
        texts = [t for t in (attachment_text(a) for a in r.get("presentedForm") or ()
                             if isinstance(a, dict)) if t]
        text = "\n\n".join(texts) or (str(r["conclusion"]) if r.get("conclusion") else None)
        if text is None:
            return [(sid, time, self.code(r.get("code"), wrap="REPORT//",
                                          description_prefix="Report: "), None, None)]
        code = self.code(r.get("code"), wrap="NOTE//REPORT//", description_prefix="Report: ")
        return [(sid, time, code, None, text)]

    def document(self, r: dict) -> list[Event]:
        sid = self.subject(r)
        period = (r.get("context") or {}).get("period")
        time = parse_time(r["date"]) if r.get("date") else _first_time(
            {"period": period if isinstance(period, dict) else {}}, "period.start")
        texts = []
        for content in r.get("content") or ():
            if isinstance(content, dict) and isinstance(content.get("attachment"), dict):
                text = attachment_text(content["attachment"])
                if text:
                    texts.append(text)
        found = concept(r.get("type"))
        if found is not None and found[0].removeprefix("LOINC/") in DISCHARGE_LETTERS \
                and found[0].startswith("LOINC/"):
            self.remember(DISCHARGE_NOTE, "Discharge summary", found[0])
            code = DISCHARGE_NOTE
        elif found is not None:
            code = self.code(r.get("type"), wrap="NOTE//", description_prefix="Note: ")
        else:
            code = "NOTE//" + UNKNOWN
        return [(sid, time, code, None, "\n\n".join(texts) or None)]

    # output -------------------------------------------------------------------------
    def flush(self) -> None:
        if not self.buffer:
            return
        frame = pl.DataFrame(self.buffer, orient="row", schema={
            S.SUBJECT_ID: pl.Int64, S.TIME: pl.Datetime("us"), S.CODE: pl.String,
            S.NUMERIC_VALUE: pl.Float64, S.TEXT_VALUE: pl.String,
        }).with_columns(pl.col(S.NUMERIC_VALUE).cast(pl.Float32))
        self.writer.add_events(frame)
        self.buffer = []

    def code_metadata(self) -> None:
        rows = {c: v for c, v in self.codes.items() if v[0] is not None or v[1]}
        if rows:
            self.writer.add_codes(list(rows), [v[0] for v in rows.values()],
                                  [[v[1]] if v[1] else None for v in rows.values()])


def _icu_unit(r: dict) -> str | None:
    """The ICU an Encounter took place in (see `ICU_DEPARTMENT_SYSTEM`), or None."""
    concepts = [r.get("serviceType")]
    concepts += [loc.get("physicalType") for loc in r.get("location") or ()
                 if isinstance(loc, dict)]
    for cc in concepts:
        for c in (cc.get("coding") or ()) if isinstance(cc, dict) else ():
            code, system = str(c.get("code") or ""), str(c.get("system") or "").lower()
            if (ICU_DEPARTMENT_SYSTEM in system and code.startswith(ICU_DEPARTMENT_PREFIX)) \
                    or code == ICU_ROLE_CODE:
                return str(c.get("display") or code)
    return None


def _has_value(r: dict) -> bool:
    return any(k.startswith("value") for k in r)


def _entries(document: object) -> Iterator[object]:
    """A Bundle's entry resources, or the document itself."""
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        for entry in document.get("entry") or ():
            yield entry.get("resource") if isinstance(entry, dict) else entry
    else:
        yield document


def convert(
    src: Path, dest: Path, *, overwrite: bool = False, chunk_rows: int = 200_000,
    progress: Progress | None = None, seed: int = 0,
) -> ImportSummary:
    """Convert the FHIR R4 JSON in `src` (bundles or NDJSON, plain or gzip) to MEDS at `dest`.

    `dest` appears complete or not at all. Raises `DataError` when `src` holds no FHIR files
    or no patient could be read; bad resources are counted, never raised.
    """
    started = perf_counter()
    src, dest = Path(src), Path(dest)
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be positive, got {chunk_rows}", where="convert",
                        fix="pass a chunk size of at least 1 row")
    files = _files(src)
    summary = ImportSummary(source=str(src), dest=str(dest))
    root = src if src.is_dir() else src.parent
    with MEDSWriter(dest, dataset_name="fhir", etl_name=ETL_NAME, seed=seed,
                    overwrite=overwrite, inputs=(src,),
                    extra_metadata={"source_format": "FHIR R4 JSON (bundles / NDJSON)",
                                    "subject_id_mapping": "sha256(lower(Patient.id))[:8] & "
                                                          "(2^63-1)"}) as writer:
        run = _Import(root, writer, summary, chunk_rows, progress)
        run.run(files)
        if not run.patients:
            raise DataError("no Patient resource found", where=str(src),
                            fix="export the Patient resources too (Patient.ndjson, or the "
                                "Patient entry of each bundle)")
        rows_given = writer.rows_written
    finish_summary(summary, dest, rows_given)
    summary.seconds = perf_counter() - started
    return summary
