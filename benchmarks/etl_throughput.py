"""Import throughput (source rows/s) and peak memory of the two ETLs, side by side.

Each import runs in a fresh child process so its peak RSS is its own. The
inputs are the test fixtures' real column layouts scaled up (MIMIC-IV: lab
rows per subject; Synthea: patients x visits), plus reading the public
anchor (already MEDS: validate + stats + mapping + tokenizing, the work a
site does with it). Prints a table, writes benchmarks/results/etl_throughput.json.

    .venv/bin/python benchmarks/etl_throughput.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures

RESULTS = Path(__file__).parent / "results" / "etl_throughput.json"


def _mimic(root: Path, scale: float) -> dict:
    from fedehr.shared.data.etl import mimic_iv
    from tests.fixtures.mimic_iv_fixture import write_mimic_iv_fixture

    write_mimic_iv_fixture(root / "src", gz=True, extra_subjects=int(2000 * scale),
                           labs_per_subject=100)
    summary = mimic_iv.convert(root / "src", root / "out")
    return {"rows": summary.rows_read, "events": summary.events_written,
            "seconds": summary.seconds}


def _synthea(root: Path, scale: float) -> dict:
    from fedehr.shared.data.etl import synthea
    from tests.fixtures.synthea_fixture import write_synthea_fixture

    write_synthea_fixture(root / "src", n_patients=int(2000 * scale), visits=10, dirty=False)
    summary = synthea.convert(root / "src", root / "out")
    return {"rows": summary.rows_read, "events": summary.events_written,
            "seconds": summary.seconds}


def _anchor(root: Path, scale: float) -> dict:
    from fedehr.shared.anchor import Anchor
    from fedehr.shared.data.validate import validate
    from fedehr.shared.tokenizer.cache import load_or_build
    from fedehr.shared.tokenizer.merge import merge_vocabulary

    started = time.monotonic()
    anchor = Anchor.load(None, root / "cache")
    validate(anchor.dataset.root)
    vocab = merge_vocabulary(anchor_counts=anchor.counts, min_count=5,
                             anchor_values=anchor.values)
    load_or_build(anchor.dataset, vocab, anchor.mapping, root / "cache")
    rows = anchor.dataset.scan().select("code").collect().height
    return {"rows": rows, "events": rows, "seconds": time.monotonic() - started}


def _child(job: str, root: str, scale: float, queue) -> None:
    result = {"mimic-iv": _mimic, "synthea": _synthea, "anchor": _anchor}[job](Path(root), scale)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    rows = {}
    ctx = mp.get_context("spawn")
    for job in ("mimic-iv", "synthea", "anchor"):
        root = Path(tempfile.mkdtemp(prefix=f"fedehr-etl-{job}-"))
        try:
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(job, str(root), args.scale, queue))
            proc.start()
            rows[job] = queue.get()
            proc.join()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'input':<10} {'rows':>10} {'events':>10} {'seconds':>8} {'rows/s':>10} "
          f"{'peak MiB':>9}")
    for job, r in rows.items():
        print(f"{job:<10} {r['rows']:>10,} {r['events']:>10,} {r['seconds']:>8.1f} "
              f"{r['rows'] / r['seconds']:>10,.0f} {r['peak_rss_mib']:>9.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"scale": args.scale, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
