"""Tokens and DP training at hospital scale (issue 16, section 2), side by side in one run.

For each size (synthetic patients, `synthesize`, one hospital):

* token cache: build time of the training split (`load_or_build`: fingerprint,
  encode, atomic write), size on disk, peak RSS of the building process;
* training: a fixed number of steps at the federation's default recipe (tiny
  preset, 128 tokens, batch 32, lr 1e-3) non-DP and DP-SGD (noise 1.0, clip
  1.0), patients/s, tokens/s, peak RSS and peak anonymous RSS (what is not the
  memory-mapped cache);
* at the smallest size, DP-SGD in 2 processes (`training.processes: 2`)
  against 1 process with the same 2 threads.

Every stage runs in a fresh process, so each peak RSS is that stage's own.
Notes and images read all-zero vectors from memory-mapped files, as a site's
note vectors are (no note encoder runs: its cost is not what is measured).
The vocabulary is built once from the smallest size, as a site receives one.

    .venv/bin/python benchmarks/dp_scale.py [--sizes 10000 100000] [--steps 30]
    .venv/bin/python benchmarks/dp_scale.py --sizes 10000 --device cuda   # a GPU

Writes benchmarks/results/dp_scale.{json,txt} (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATA = Path("/tmp/fedehr-dp-scale")
PRESET, MAX_LEN, BATCH, LR, NOISE, CLIP = "tiny", 128, 32, 1e-3, 1.0, 1.0
WARMUP = 3  # steps not timed


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def anon_rss_mb() -> float:
    """Resident memory not backed by a file: the process's own, not the mapped cache."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- stages (each in its own process) ------------------------------------------------


def stage_synth(root: Path, size: int) -> dict:
    from fedehr.shared.data.synth.hospitals import synthesize

    start = time.perf_counter()
    summary = synthesize(root / f"meds-{size}", sites=1, patients=size, overwrite=True)[0]
    return {"seconds": time.perf_counter() - start, "events": summary.events,
            "meds": str(summary.path), "peak_rss_mb": peak_rss_mb()}


def stage_vocab(root: Path, meds: str) -> dict:
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.tokenizer.mapping import CodeMapping
    from fedehr.shared.tokenizer.merge import vocabulary_from_public

    dataset = MEDSDataset.open(meds)
    mapping = CodeMapping.from_config({}, dataset.codes())
    vocab = vocabulary_from_public(mapping.apply(dataset.scan().collect()), min_count=10)
    path = root / "vocab.json"
    vocab.to_json(path)
    return {"vocab": str(path), "size": len(vocab)}


def stage_cache(root: Path, meds: str, vocab_path: str, size: int) -> dict:
    from fedehr.shared.data import schema as S
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.tokenizer.cache import load_or_build
    from fedehr.shared.tokenizer.mapping import CodeMapping
    from fedehr.shared.tokenizer.vocabulary import Vocabulary

    dataset = MEDSDataset.open(meds)
    vocab = Vocabulary.from_json(vocab_path)
    mapping = CodeMapping.from_config({}, dataset.codes())
    start = time.perf_counter()
    cache = load_or_build(dataset, vocab, mapping, root / f"cache-{size}", split=S.TRAIN)
    seconds = time.perf_counter() - start
    disk = sum(f.stat().st_size for f in Path(cache.path).iterdir())
    return {"seconds": seconds, "disk_mb": disk / 2**20, "patients": len(cache),
            "tokens": cache.meta["tokens"], "notes": cache.meta["notes"],
            "images": cache.meta["images"], "cache": str(cache.path),
            "peak_rss_mb": peak_rss_mb()}


def zero_vectors(path: Path, rows: int, dim: int):
    """All-zero vectors in a .npy file, opened memory-mapped (as a site's note vectors)."""
    import numpy as np

    if not path.exists():
        np.save(path, np.zeros((rows, dim), dtype=np.float32))
    return np.load(path, mmap_mode="r")


def stage_train(cache_path: str, vocab_path: str, *, dp: bool, processes: int, steps: int,
                threads: int, device: str, batch: int = BATCH) -> dict:
    import torch

    from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
    from fedehr.shared.model import EHRModel, ModelConfig
    from fedehr.shared.tokenizer.cache import TokenCache
    from fedehr.shared.tokenizer.vocabulary import Vocabulary
    from fedehr.shared.tokenizer.windows import PatientWindows
    from fedehr.shared.training import train

    torch.set_num_threads(threads)
    cache, vocab = TokenCache.open(cache_path), Vocabulary.from_json(vocab_path)
    config = ModelConfig.preset(PRESET, len(vocab), max_len=MAX_LEN,
                                pro_dim=len(vocab.pro_codes))
    notes = zero_vectors(Path(cache_path) / "bench-notes.npy", cache.meta["notes"],
                         config.note_dim)
    images = zero_vectors(Path(cache_path) / "bench-images.npy", cache.meta["images"],
                          config.image_dim)
    windows = PatientWindows(cache, vocab, MAX_LEN, note_vectors=notes, image_vectors=images)
    torch.manual_seed(0)
    model = EHRModel(config)
    anon, clock = [anon_rss_mb()], []

    def watch(step: int, total: int, loss: float) -> None:
        anon.append(anon_rss_mb())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        clock.append(time.perf_counter())

    kwargs = dict(steps=steps, batch_size=batch, lr=LR, progress=watch, device=device)
    if dp:
        result = train_dp(model, windows, dp=DPConfig(max_grad_norm=CLIP,
                                                      noise_multiplier=NOISE, delta=1e-5),
                          seed=1, processes=processes, num_threads=threads, **kwargs)
    else:
        result = train(model, windows, num_threads=threads, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    # steady state: the first WARMUP steps (allocator, hooks, first batch) are not timed;
    # patients and tokens of the timed steps are taken as the per-step average
    steady = clock[-1] - clock[WARMUP - 1] if len(clock) > WARMUP else result.seconds
    share = (result.steps - WARMUP) / result.steps if len(clock) > WARMUP else 1.0
    return {"seconds": result.seconds, "steps": result.steps, "patients": result.examples,
            "tokens": result.tokens, "steady_seconds": steady,
            "patients_per_s": result.examples * share / steady,
            "tokens_per_s": result.tokens * share / steady, "peak_rss_mb": peak_rss_mb(),
            "peak_anon_rss_mb": max(anon), "anon_rss_first_step_mb": anon[1] if len(anon) > 1
            else anon[0], "params": sum(p.numel() for p in model.parameters()),
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20
            if device.startswith("cuda") else None}


STAGES = {"synth": stage_synth, "vocab": stage_vocab, "cache": stage_cache,
          "train": stage_train}


def in_child(stage: str, **kwargs) -> dict:
    """Run one stage in a fresh Python process and return its JSON result."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, __file__, "--stage", stage, "--args",
                          json.dumps(kwargs, default=str)], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"stage {stage} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run -------------------------------------------------------------------------


def process_speedup(train_args: dict, repeats: int) -> dict:
    """DP in 2 processes x 1 thread vs 1 process x 2 threads, alternating `repeats` times
    (the machine is shared): whole-run patients/s, start-up and warm-up included in both."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(repeats):
        for processes in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[processes].append(in_child("train", dp=True, processes=processes,
                                            **train_args))

    def rate(t: dict) -> float:
        return t["patients"] / t["seconds"]

    one = statistics.median(rate(t) for t in runs[1])
    two = statistics.median(rate(t) for t in runs[2])
    return {"dp_2_processes": min(runs[2], key=lambda t: abs(rate(t) - two)),
            "speedup_2_processes": {"one_process_patients_per_s": [rate(t) for t in runs[1]],
                                    "two_processes_patients_per_s": [rate(t) for t in runs[2]],
                                    "ratio_of_medians": two / one}}


def run(sizes: list[int], steps: int, threads: int, device: str, root: Path,
        repeats: int = 3) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    vocab = None
    for size in sorted(sizes):
        synth = in_child("synth", root=root, size=size)
        if vocab is None:
            vocab = in_child("vocab", root=root, meds=synth["meds"])
        cache = in_child("cache", root=root, meds=synth["meds"], vocab_path=vocab["vocab"],
                         size=size)
        row = {"patients": size, "events": synth["events"], "synth": synth, "cache": cache}
        train_args = dict(cache_path=cache["cache"], vocab_path=vocab["vocab"], steps=steps,
                          threads=threads, device=device)
        row["non_dp"] = in_child("train", dp=False, processes=1, **train_args)
        row["dp"] = in_child("train", dp=True, processes=1, **train_args)
        if size == min(sizes) and device == "cpu":
            row.update(process_speedup(train_args, repeats))
        rows.append(row)
        print(table([row], header=len(rows) == 1), flush=True)
    return {"device": device, "threads": threads, "steps": steps, "preset": PRESET,
            "max_len": MAX_LEN, "batch_size": BATCH, "vocab_size": vocab["size"],
            "cpu_count": os.cpu_count(), "rows": rows,
            "extrapolation": extrapolate(rows, 300_000)}


def run_cached(cache_path: Path, vocab_path: Path, steps: int, threads: int, device: str,
               batch: int = BATCH) -> dict:
    """Training only, on a cache built earlier (e.g. carried to a GPU machine)."""
    meta = json.loads((cache_path / "meta.json").read_text())
    disk = sum(f.stat().st_size for f in cache_path.glob("*") if not f.name.startswith("bench-"))
    cache = {"seconds": float("nan"), "disk_mb": disk / 2**20, "peak_rss_mb": float("nan"),
             "patients": meta["patients"], "tokens": meta["tokens"]}
    row = {"patients": meta["patients"], "events": meta["events"], "cache": cache}
    train_args = dict(cache_path=str(cache_path), vocab_path=str(vocab_path), steps=steps,
                      threads=threads, device=device, batch=batch)
    row["non_dp"] = in_child("train", dp=False, processes=1, **train_args)
    row["dp"] = in_child("train", dp=True, processes=1, **train_args)
    vocab_size = len(json.loads(vocab_path.read_text()).get("tokens", [])) or None
    return {"device": device, "threads": threads, "steps": steps, "preset": PRESET,
            "max_len": MAX_LEN, "batch_size": batch, "vocab_size": vocab_size,
            "cpu_count": os.cpu_count(), "rows": [row], "extrapolation": None}


def extrapolate(rows: list[dict], target: int) -> dict | None:
    """Linear growth per patient between the two largest sizes measured (cache time, disk);
    training memory and throughput taken as flat (checked: the measured growth)."""
    if len(rows) < 2:
        return None
    a, b = rows[-2], rows[-1]
    per = (target - b["patients"]) / (b["patients"] - a["patients"])

    def linear(get) -> float:
        return get(b) + per * (get(b) - get(a))

    return {"patients": target, "assumption": "cache build time and size grow linearly in "
            "patients (slope of the two largest sizes); training throughput and memory beyond "
            "the mapped cache do not depend on the number of patients",
            "cache_seconds": linear(lambda r: r["cache"]["seconds"]),
            "cache_disk_mb": linear(lambda r: r["cache"]["disk_mb"]),
            "cache_peak_rss_mb": linear(lambda r: r["cache"]["peak_rss_mb"]),
            "dp_peak_anon_rss_mb": linear(lambda r: r["dp"]["peak_anon_rss_mb"])}


def table(rows: list[dict], header: bool = True) -> str:
    lines = []
    if header:
        lines.append(f"{'patients':>9} {'events':>9} | {'cache s':>7} {'MB':>6} {'RSS MB':>7} | "
                     f"{'mode':<12} {'pat/s':>7} {'tok/s':>8} {'RSS MB':>7} {'anon MB':>7}")
    for row in rows:
        c = row["cache"]
        modes = [("non-DP", row["non_dp"]), ("DP", row["dp"])]
        if "dp_2_processes" in row:
            modes.append(("DP 2 procs", row["dp_2_processes"]))
        for i, (name, t) in enumerate(modes):
            left = (f"{row['patients']:>9} {row['events']:>9} | {c['seconds']:>7.1f} "
                    f"{c['disk_mb']:>6.1f} {c['peak_rss_mb']:>7.0f}") if i == 0 else " " * 43
            lines.append(f"{left} | {name:<12} {t['patients_per_s']:>7.1f} "
                         f"{t['tokens_per_s']:>8.0f} {t['peak_rss_mb']:>7.0f} "
                         f"{t['peak_anon_rss_mb']:>7.0f}")
    return "\n".join(lines)


def report(result: dict) -> str:
    lines = [f"dp_scale: device {result['device']}, {result['threads']} threads, "
             f"{result['steps']} steps, preset {result['preset']}, {result['max_len']} tokens, "
             f"batch {result['batch_size']}, vocabulary {result['vocab_size']}",
             table(result["rows"])]
    first = result["rows"][0]
    if "speedup_2_processes" in first:
        speed = first["speedup_2_processes"]
        runs = len(speed["one_process_patients_per_s"])
        lines.append(f"DP with 2 processes x 1 thread vs 1 process x 2 threads: "
                     f"{speed['ratio_of_medians']:.2f}x (median of {runs} "
                     "alternating runs each, whole-run patients/s with start-up; the 2-process "
                     "row's pat/s also counts start-up, its RSS is the calling process only)")
    for row in result["rows"]:
        ratio = row["dp"]["tokens_per_s"] / row["non_dp"]["tokens_per_s"]
        lines.append(f"{row['patients']} patients: DP runs at {ratio:.2f} of non-DP tokens/s")
    if (ex := result["extrapolation"]) is not None:
        lines.append(f"extrapolated to {ex['patients']} patients ({ex['assumption']}): cache "
                     f"{ex['cache_seconds']:.0f} s, {ex['cache_disk_mb']:.0f} MB on disk, build "
                     f"peak RSS {ex['cache_peak_rss_mb']:.0f} MB; DP training anonymous RSS "
                     f"{ex['dp_peak_anon_rss_mb']:.0f} MB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the 1 vs 2 processes pair")
    parser.add_argument("--data", type=Path, default=DATA, help="where data and caches go")
    parser.add_argument("--out", type=Path, default=RESULTS / "dp_scale")
    parser.add_argument("--cache", type=Path, help="train only, on this built token cache")
    parser.add_argument("--vocab", type=Path, help="the vocabulary of --cache")
    parser.add_argument("--batch", type=int, default=BATCH, help="with --cache: batch size")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        kwargs = json.loads(args.args)
        if "root" in kwargs:
            kwargs["root"] = Path(kwargs["root"])
        print(json.dumps(STAGES[args.stage](**kwargs)))
        return
    if args.cache is not None:
        result = run_cached(args.cache, args.vocab, args.steps, args.threads, args.device,
                            args.batch)
    else:
        result = run(args.sizes, args.steps, args.threads, args.device, args.data, args.repeats)
    text = report(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
