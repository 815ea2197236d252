"""Tokenizer benchmark: encoding throughput and warm-cache start versus a cold build.

Generates a MEDS dataset (default 20,000 patients, ~2.4M events: labs with
values, diagnoses, medications, notes, images, PROs), then measures, side by
side in one run:

* encode: MEDS shards -> token timelines (`encode_dataset`), events/s;
* cold build: dataset fingerprint + encode + atomic cache write (`load_or_build`);
* warm start: a fresh Python process that opens the cache (`TokenCache.open`) and
  reads one window, timed from inside (imports included) and as process wall time;
* warm `load_or_build` in-process (fingerprint included, which re-hashes the data).

Polars is limited to `--threads` threads (default 2, the site machine's cores).
Prints a table and writes benchmarks/results/tokenizer.json.

    .venv/bin/python benchmarks/tokenizer_bench.py [--patients 20000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(dest: Path, n_patients: int, seed: int = 0):
    import numpy as np
    import polars as pl

    from fedehr.shared.data.writer import MEDSWriter

    rng = np.random.default_rng(seed)
    labs = [(f"LAB//{c}//mg/dL", f"LOINC/{c}") for c in
            ("2160-0", "2345-7", "3094-0", "17861-6", "2885-2", "1751-7", "1975-2", "2093-3")]
    dx = [f"DIAGNOSIS//ICD//10//{c}" for c in ("I509", "E119", "J189", "N179", "I10", "J441",
                                               "N390", "A419", "I480", "E785")]
    meds = [f"MEDICATION//{m}" for m in ("metformin", "lisinopril", "furosemide", "heparin")]
    per_patient = rng.poisson(110, n_patients) + 10
    n = int(per_patient.sum())
    sid = np.repeat(np.arange(1, n_patients + 1), per_patient)
    start = rng.integers(0, 3650, n_patients) * 86_400_000_000
    offsets = (rng.exponential(6.0, n) * 3_600_000_000).astype(np.int64)
    # time = patient start + cumulative offsets within the patient
    cum = np.cumsum(offsets)
    first = np.concatenate([[0], np.cumsum(per_patient)[:-1]])
    cum -= np.repeat(cum[first] - offsets[first], per_patient)
    t = np.repeat(start, per_patient) + cum + 1_600_000_000_000_000
    kind = rng.choice(6, n, p=[0.55, 0.15, 0.2, 0.04, 0.03, 0.03])
    lab_i = rng.integers(0, len(labs), n)
    codes = np.where(kind == 0, np.array([c for c, _ in labs])[lab_i],
             np.where(kind == 1, np.array(dx)[rng.integers(0, len(dx), n)],
             np.where(kind == 2, np.array(meds)[rng.integers(0, len(meds), n)],
             np.where(kind == 3, "NOTE//DISCHARGE_SUMMARY",
             np.where(kind == 4, "IMAGE//CHEST_XRAY", "PRO//PROMIS//FATIGUE")))))
    values = np.where(kind == 0, np.exp(rng.normal(0, 0.5, n)) * (lab_i + 1),
                      np.where(kind == 5, rng.normal(50, 10, n), np.nan)).astype(np.float32)
    events = pl.DataFrame({"subject_id": sid, "time": t.astype("datetime64[us]"),
                           "code": codes.tolist(), "numeric_value": values, "kind": kind})
    events = events.with_columns(
        pl.col("numeric_value").fill_nan(None),
        pl.when(pl.col("kind") == 3).then(pl.lit("Discharge summary text."))
        .when(pl.col("kind") == 4).then(pl.format("study-{}", pl.int_range(pl.len())))
        .otherwise(None).alias("text_value"),
    ).drop("kind")
    static = pl.DataFrame({"subject_id": np.arange(1, n_patients + 1)}).with_columns(
        pl.lit(None, dtype=pl.Datetime("us")).alias("time"),
        pl.when(pl.col("subject_id") % 2 == 0).then(pl.lit("GENDER//F"))
        .otherwise(pl.lit("GENDER//M")).alias("code"))
    births = pl.DataFrame({"subject_id": np.arange(1, n_patients + 1),
                           "time": (start + 1_600_000_000_000_000
                                    - rng.integers(20, 90, n_patients) * 31_557_600_000_000)
                           .astype("datetime64[us]")}).with_columns(
        pl.lit("MEDS_BIRTH").alias("code"))
    with MEDSWriter(dest, dataset_name="bench", etl_name="bench",
                    subjects_per_shard=5000) as writer:
        writer.add_events(events)
        writer.add_events(static)
        writer.add_events(births)
        parents = {c: [p] for c, p in labs}
        writer.add_codes(list(parents), parents=list(parents.values()))
    return n + 2 * n_patients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/tokenizer.json")
    args = parser.parse_args()
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)

    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.tokenizer.cache import load_or_build
    from fedehr.shared.tokenizer.encode import encode_dataset
    from fedehr.shared.tokenizer.mapping import CodeMapping
    from fedehr.shared.tokenizer.merge import vocabulary_from_public

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        n_events = generate(tmp / "meds", args.patients)
        gen_s = time.perf_counter() - t
        ds = MEDSDataset.open(tmp / "meds")
        mapping = CodeMapping.from_config({}, ds.codes())
        t = time.perf_counter()
        vocab = vocabulary_from_public(mapping.apply(ds.scan().collect()), min_count=10)
        vocab_s = time.perf_counter() - t

        encode_runs = []
        for _ in range(3):
            t = time.perf_counter()
            enc = encode_dataset(ds, vocab, mapping)
            encode_runs.append(time.perf_counter() - t)
        encode_s = min(encode_runs)

        t = time.perf_counter()
        fingerprint = ds.fingerprint()
        fingerprint_s = time.perf_counter() - t
        t = time.perf_counter()
        cache = load_or_build(ds, vocab, mapping, tmp / "cache")
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        load_or_build(ds, vocab, mapping, tmp / "cache", fingerprint=fingerprint)
        warm_known_s = time.perf_counter() - t
        t = time.perf_counter()
        load_or_build(ds, vocab, mapping, tmp / "cache")
        warm_hash_s = time.perf_counter() - t

        vocab.to_json(tmp / "vocab.json")
        probe = (
            "import time; t=time.perf_counter()\n"
            "from fedehr.shared.tokenizer.cache import TokenCache\n"
            f"c = TokenCache.open({str(cache.path)!r})\n"
            "t_open = time.perf_counter() - t\n"
            "from fedehr.shared.tokenizer.vocabulary import Vocabulary\n"
            "from fedehr.shared.tokenizer.windows import PatientWindows\n"
            f"v = Vocabulary.from_json({str(tmp / 'vocab.json')!r})\n"
            "w = PatientWindows(c, v, 256); w[len(w) // 2]\n"
            "print(t_open, time.perf_counter() - t)\n"
        )
        fresh = []
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                 check=True).stdout.split()
            fresh.append((float(out[0]), float(out[1]), time.perf_counter() - t))
        fresh_open, fresh_window, fresh_wall = (min(x[i] for x in fresh) for i in range(3))

        results = {
            "patients": args.patients, "events": n_events, "tokens": int(len(enc.tokens)),
            "vocabulary_size": len(vocab), "polars_threads": args.threads,
            "generate_s": gen_s, "vocabulary_s": vocab_s,
            "encode_s": encode_s, "encode_events_per_s": n_events / encode_s,
            "fingerprint_s": fingerprint_s, "cold_build_s": cold_s,
            "warm_open_known_fingerprint_s": warm_known_s,
            "warm_open_with_fingerprint_s": warm_hash_s,
            "fresh_process_open_s": fresh_open,
            "fresh_process_open_plus_first_window_s": fresh_window,
            "fresh_process_wall_s": fresh_wall,
            "cold_over_fresh_open": cold_s / fresh_open,
            "cache_bytes": sum(p.stat().st_size for p in cache.path.iterdir()),
        }
    rows = [
        ("events", f"{n_events:,}"), ("tokens", f"{results['tokens']:,}"),
        ("encode (MEDS -> tokens)", f"{encode_s:.2f} s  = {n_events / encode_s:,.0f} events/s"),
        ("dataset fingerprint", f"{fingerprint_s:.2f} s"),
        ("cold build (fingerprint+encode+write)", f"{cold_s:.2f} s"),
        ("warm load_or_build, fingerprint given", f"{warm_known_s * 1e3:.1f} ms"),
        ("warm load_or_build, re-hash dataset", f"{warm_hash_s:.2f} s"),
        ("fresh process: import + open cache", f"{fresh_open * 1e3:.1f} ms"),
        ("fresh process: + vocab + first window", f"{fresh_window * 1e3:.1f} ms"),
        ("fresh process wall (interpreter incl.)", f"{fresh_wall:.2f} s"),
        ("cold build / fresh open", f"{results['cold_over_fresh_open']:.0f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"tokenizer benchmark ({args.patients:,} patients, {args.threads} polars threads)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from fedehr.shared.atomic import write_text

    write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
