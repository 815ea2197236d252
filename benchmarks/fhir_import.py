"""FHIR import speed and memory on a generated NDJSON bulk export (issue 19, section 5).

Writes a gzipped bulk export of `--resources` resources (one NDJSON file per type, as a
server's $export does: Patient, Encounter, Condition, Procedure, Observation with LOINC and
UCUM, MedicationStatement, DocumentReference with a base64 letter), then runs
`fedehr.shared.data.etl.fhir.convert` on it in a child process and reports resources and
events per second and the child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``), so
the generator's own memory does not count.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fhir_import.py [--resources 100000]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Share of resources per type (the rest of Patient's share is what is left).
MIX = {"Encounter": 0.08, "Condition": 0.08, "Procedure": 0.05, "Observation": 0.65,
       "MedicationStatement": 0.08, "DocumentReference": 0.01}
LABS = [("2160-0", "mg/dL", 1.0), ("2823-3", "mmol/L", 4.2), ("2951-2", "mmol/L", 139.0),
        ("718-7", "g/dL", 13.5), ("6690-2", "10*3/uL", 7.0), ("2345-7", "mg/dL", 100.0)]
ICD = ["I50.01", "E11.90", "I10.00", "J18.9", "N18.3", "I48.0"]
OPS = ["8-933", "3-052", "1-632.0", "5-361.03", "8-98f.10"]
ATC = ["C03CA01", "A10BA02", "C07AB07", "B01AF01", "N02BE01"]
LETTER = base64.b64encode(("Arztbrief. Diagnosen: Herzinsuffizienz. Verlauf unauffaellig. "
                           * 8).encode()).decode()


def generate(root: Path, n: int, seed: int = 0) -> int:
    """Write about `n` resources; return how many were written."""
    rng = random.Random(seed)
    patients = max(1, int(n * (1 - sum(MIX.values()))))
    ids = [f"pat-{i}" for i in range(patients)]
    written = 0

    def ref() -> dict:
        return {"reference": f"Patient/{rng.choice(ids)}"}

    def when() -> str:
        return (f"20{rng.randint(10, 23)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+01:00")

    def cc(system: str, code: str) -> dict:
        return {"coding": [{"system": system, "code": code}]}

    makers = {
        "Encounter": lambda: {"resourceType": "Encounter", "subject": ref(),
                              "class": {"code": rng.choice(["IMP", "AMB", "EMER"])},
                              "period": {"start": when(), "end": when()}},
        "Condition": lambda: {"resourceType": "Condition", "subject": ref(),
                              "code": cc("http://fhir.de/CodeSystem/bfarm/icd-10-gm",
                                         rng.choice(ICD)), "recordedDate": when()[:10]},
        "Procedure": lambda: {"resourceType": "Procedure", "subject": ref(),
                              "code": cc("http://fhir.de/CodeSystem/bfarm/ops", rng.choice(OPS)),
                              "performedDateTime": when()},
        "Observation": lambda: (lambda lab: {
            "resourceType": "Observation", "subject": ref(), "status": "final",
            "code": cc("http://loinc.org", lab[0]), "effectiveDateTime": when(),
            "valueQuantity": {"value": round(lab[2] * rng.uniform(0.5, 1.5), 2),
                              "system": "http://unitsofmeasure.org", "code": lab[1]}})(
            rng.choice(LABS)),
        "MedicationStatement": lambda: {
            "resourceType": "MedicationStatement", "subject": ref(),
            "medicationCodeableConcept": cc("http://fhir.de/CodeSystem/bfarm/atc",
                                            rng.choice(ATC)),
            "effectivePeriod": {"start": when(), "end": when()}},
        "DocumentReference": lambda: {
            "resourceType": "DocumentReference", "subject": ref(), "date": when(),
            "type": cc("http://loinc.org", "18842-5"),
            "content": [{"attachment": {"contentType": "text/plain", "data": LETTER}}]},
    }
    with gzip.open(root / "Patient.ndjson.gz", "wt", compresslevel=1) as fh:
        for pid in ids:
            fh.write(json.dumps({"resourceType": "Patient", "id": pid,
                                 "gender": rng.choice(["male", "female"]),
                                 "birthDate": f"19{rng.randint(20, 99)}-01-01"}) + "\n")
    written += patients
    for kind, share in MIX.items():
        with gzip.open(root / f"{kind}.ndjson.gz", "wt", compresslevel=1) as fh:
            for _ in range(int(n * share)):
                fh.write(json.dumps(makers[kind]()) + "\n")
                written += 1
    return written


CHILD = """
import json, sys, time
from fedehr.shared.data.etl.fhir import convert
s = convert(sys.argv[1], sys.argv[2])
print(json.dumps({"rows_read": s.rows_read, "events": s.events_written,
                  "subjects": s.subjects, "seconds": s.seconds,
                  "dropped": dict(s.rows_dropped)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "export"
        src.mkdir()
        t0 = time.perf_counter()
        n = generate(src, args.resources)
        size = sum(p.stat().st_size for p in src.iterdir())
        print(f"generated {n:,} resources ({size / 1e6:.1f} MB gzipped) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(Path(tmp) / "meds")],
                             check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        result = json.loads(out.stdout.strip().splitlines()[-1])
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"import: {result['rows_read']:,} resources -> {result['events']:,} events, "
          f"{result['subjects']:,} subjects in {result['seconds']:.1f} s "
          f"({result['rows_read'] / result['seconds']:,.0f} resources/s, "
          f"{result['events'] / result['seconds']:,.0f} events/s; {wall:.1f} s with start-up); "
          f"peak RSS {peak_mib:,.0f} MiB")
    print(f"dropped: {result['dropped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
