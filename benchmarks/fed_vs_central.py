"""Federated versus central training: what federation and privacy cost and gain.

Side by side in one run, on four synthetic hospitals (`synthesize`, seed 0);
one of them (default hospital_c) is left out of all training:

  (a) central        non-private training on the pooled train splits of the three
                     training hospitals (the library trainer; no anchor, or with
                     --central-warm from (b)'s public anchor warm start; with
                     --central-stop-early kept at its best loss on the pooled
                     tuning splits);
  (b) fed DP         a real federation (`LocalFederation`: TLS SuperLink, one
                     `fedehr site start` daemon per hospital, Flower processes),
                     DP-SGD at epsilon 8 per site (site.yaml privacy.epsilon),
                     warm-started on the public anchor, whose windows also join
                     every DP-SGD batch (--anchor-per-step, at no privacy cost);
  (c) alone          each training hospital on its own, DP-SGD at epsilon 8 (the
                     site trainer's path: privacy ledger, noise for the budget);
                     with --alone-warm from (b)'s public warm start, as a hospital
                     alone could start from the published public model;
  (d) fed no anchor  the same federation as (b) with ``warm_start.enabled: false``.
  (0) untrained      no training at all: the initial weights every arm starts from.
                     A floor: a probe on a random transformer's vectors reads the
                     codes' counts through a random projection, so what an arm
                     adds over (0) is what its training taught the features.
  (w) warm start     (b)'s public anchor warm start alone (its round-0 checkpoint):
                     what (b) adds over (w) is what the DP rounds on the sites added.

Budgets. The DP arms use the federation's local recipe (batch, learning
rate, steps). (a) is trained with the central recipe of
benchmarks/dp_recipe_sweep.py at 4x its steps ("central-steps4x": 1,920 steps of
batch 32 at lr 2e-3, twice the patients-seen of the three sites together). It
was chosen on the tuning splits: against 480 steps, the tuning loss fell 0.3
nats and the probe rose 0.065, above the count baseline (data seed 0). 480
steps was the default until then; trained at the DP batch of 128 with 240 steps
(a) lost 0.06 AUROC on average over the 16 cells (k=all probe, data seed 0),
which would flatter (b). Each (c) site takes
as many steps as it takes in the federation (rounds x local steps). (b)
additionally gets the anchor warm start (`--warm-steps`, non-private, public
data, batch 32, lr 2e-3, early-stopped on the anchor's tuning split; `--warm-steps` the most).

Vocabulary. (a) and (c) use (b)'s vocabulary (anchor + the sites' DP count
release) and (b)'s model configuration and initial weights (seed 0, before the
warm start). Each (c) ledger is first charged with the site's vocabulary
releases, copied from its ledger in (b), so (c) trains on the same budget
that is left to the site in (b). (d) runs its own vocabulary round: a second
DP release, so its vocabulary differs from (b)'s by noise; (d) still uses the
anchor for that round (its codes are the public candidates, its exact counts
and value-bin edges are merged in) and for the server's anchor-loss
evaluation, but never trains on it.

Evaluation (`fedehr.shared.clinical.evaluate`, the core of `fedehr model
evaluate`), per arm, on each training hospital's held_out patients (10 %; no
arm trains on them, and benchmarks/dp_recipe_sweep.py chooses its recipes on
the tuning split, which is therefore not tested on; `--test-rows
tuning+held-out` adds it, as every run before 2026-12-05 evening did) and on
the left-out hospital (a seeded 50/50 split of its patients: no arm saw any
of them). Tasks: in-hospital
mortality, 30-day readmission, long stay and ICU transfer (ACES configs).
Methods: logistic probes on frozen embeddings (k = all and k = 64), the
count-feature baseline (the same for every arm: shown once per set), and
zero-shot answers from generated timelines for (b) on a seeded subset of test
rows of the left-out hospital (all positives up to half the subset; AUROC
does not depend on the class ratio), compared with the k=all probe on the
same rows. Each (c) is evaluated on its own hospital and on the left-out one.

Prints progress, a markdown table and the three target checks, writes
benchmarks/results/fed_vs_central.json and a PNG plot beside it.

    .venv/bin/python benchmarks/fed_vs_central.py [--patients 6000] [--rounds 4]
        [--steps 20] [--batch-size 128] [--lr 8e-3] [--quick] [--keep DIR [--reuse]]

Schedule and time. (b) federates first, alone: (a) and (c) start from its
vocabulary and initial weights. Then the cores are shared: (d) federates (its
own processes) while ``--jobs`` processes (default 2) train (a) first, the longest,
and the three (c), answer zero-shot with (b) and evaluate each arm as soon as
it is trained. Each process has ``--threads`` torch threads (default 1: two on
busy cores measured up to 10x slower). On a quiet 2-core machine (2026-12-06)
a default run took 25.1, 25.2 and 25.9 minutes (data seeds 0, 1, 2); seed 0:
(b) 502 s, then 1,002 s for the rest. With the cheaper training step of that
night (benchmarks/step_cost_bench.py) seed 2 took 24.0 minutes and seed 0 25.2
((b) 533 s, then 976 s): one run's time moves by about 30 s on this machine.
One after the other it took 29.1 (d 434 s, then (a) 613 s beside the (c) arms,
then 151 s of evaluation and zero-shot): the federations keep both cores 91 %
busy, so what sharing gains is the idle core beside (a) and beside the
evaluations. On 2026-12-07 the machine was slower: step_cost_bench's unchanged
"before" steps took 10-20 % longer than their record, and every phase of a run
grew, evaluation and zero-shot included, which nothing had changed. Seed 1 took
30.1 minutes ((b) 629 s, then 1,170 s; 25.2 minutes and 490 s on 12-06). That
day's cuts in a round's overhead: the ServerApp's polling (its rounds of (b)
alone 152 s before, 131 s after, two runs one after the other), the cached RDP
accounting (1.0 s of 2.0 s per site and round) and the anchor's windows kept by
the site worker (1.8 s per site and round). Later that day the model began to travel
packed (shared/packed_arrays.py: a site's download 4.74 -> 0.10 s in
benchmarks/model_transfer.py) and seed 1 took 28.4 minutes: (b) 548 s and (d) 502 s
against 629 and 556 that morning, while the arms without Flower moved 1-9 % ((a)
1,056 s against 1,068; evaluation 123 against 127 s), so the machine was about as
slow. Starting (a) as soon as (b) published its round 0 (tried on the morning of
2026-12-07, seed 0) gained nothing: (b) took 643 s instead of 533-548, (a) still ended
1,539 s into the run and the run took 28.6 minutes; the federation leaves no idle core
for (a) to fill, so the change was not kept. Run times of the arms printed at the
end overlap (the federation (d) slows (a) and (c) while it runs). ``--keep DIR --reuse`` reruns
everything after the federations on the ones kept in DIR, and reuses an (a) or
(c) kept there when it was trained with the same settings (options that only
change the evaluation, such as --test-rows, do not count).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "fed_vs_central.json"
TASKS = ("mortality", "readmission_30d", "long_los", "icu_transfer")
ARMS = {"a": "(a) central, no DP", "b": "(b) fed DP", "c": "(c) alone DP",
        "d": "(d) fed DP, no anchor", "0": "(0) untrained", "w": "(w) anchor warm start"}
TARGET_GAP = 0.03  # (b) within this AUROC of (a)
ZERO_SHOT_RATIO = 0.9  # zero-shot AUROC at least this share of the k=all probe's
BOOTSTRAP = 500
MIN_CLASS = 10  # a set with fewer test positives (or negatives) is reported, not judged
# the anchor warm start keeps the recipe it was tuned with (100 public patients: a small
# batch, a small learning rate); benchmarks/dp_recipe_sweep.py warms up the same way
WARM_BATCH, WARM_LR = 32, 2e-3


def notes(args, training: dict, left_out: str) -> list[str]:
    """What the numbers mean: budgets, vocabularies, and what (d) still takes from the anchor."""
    steps = args.rounds * args.steps
    b_tokens, d_tokens = training["b"]["vocab_tokens"], training["d"]["vocab_tokens"]
    return [
        f"budget: DP arms at batch {args.batch_size}, lr {args.lr}, {steps} steps per site; "
        f"(a) {args.central_steps} non-private steps of batch {args.central_batch_size} at lr "
        f"{args.central_lr} on the pooled train splits (the sweep's central recipe"
        + ("), from (b)'s anchor warm start" if args.central_warm else ")")
        + (", kept at its best loss on the pooled tuning splits; " if args.central_stop_early
           else "; ")
        + ("(c) from (b)'s anchor warm start; " if args.alone_warm else "")
        + f"probes read the {args.pooling} hidden state(s); "
        f"(b) also up to {args.warm_steps} non-private anchor steps (public data, batch "
        f"{WARM_BATCH}, lr {WARM_LR}, early-stopped on the anchor's tuning split) before "
        "round 1",
        "anchor: " + (f"a synthetic public hospital of {args.public_patients} patients (the "
                      "teaching hospital's case mix, its own seed; a stand-in for a large "
                      "public set)" if args.public_patients else
                      "the MIMIC-IV demo (100 real patients)"),
        f"privacy: epsilon {args.epsilon} per site (delta 1e-5, RDP) in (b), (c) and (d), the "
        "vocabulary release included: (c) starts from the same vocabulary charges as in (b)",
        f"vocabulary: (a), (b), (c) share (b)'s ({b_tokens} tokens) and (b)'s initial weights; "
        f"(d) ran its own DP vocabulary round ({d_tokens} tokens)",
        "(d) never trains on the anchor, but still uses it: its codes are the public "
        "candidate list of the vocabulary round, its exact counts and value-bin edges are "
        "merged into the vocabulary, and the server reports an anchor loss each round",
        f"test rows: the {args.test_rows.replace('-', '_')} patients of each training site "
        "(never trained on), "
        f"half of {left_out}'s patients (no arm saw any); probes fit on the train split / "
        f"the other half of {left_out}",
        f"a comparison needs {MIN_CLASS} test positives and negatives; smaller ones are shown "
        "but not judged",
    ]


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)


# -- data ------------------------------------------------------------------------------


@dataclass
class Hospital:
    name: str
    path: Path
    harmonisation: Path | None
    view: Path | None = None  # the evaluation view (own subject_splits)


def evaluation_view(hospital: Hospital, out: Path, *, left_out: bool, seed: int,
                    with_tuning: bool = False) -> Path:
    """A folder that shares the hospital's data and metadata (symlinks) but has its own
    subject_splits: train stays train; test ("held_out") is held_out (with `with_tuning`
    also tuning), or for the left-out hospital a seeded half of all its patients."""
    import numpy as np
    import polars as pl

    from fedehr.shared.data import schema as S

    out.mkdir(parents=True)
    (out / S.DATA_DIR).symlink_to(hospital.path.resolve() / S.DATA_DIR)
    meta = out / "metadata"
    meta.mkdir()
    for f in (hospital.path / "metadata").iterdir():
        if f.name != Path(S.SPLITS_FILE).name:
            (meta / f.name).symlink_to(f.resolve())
    splits = pl.read_parquet(hospital.path / S.SPLITS_FILE)
    if left_out:
        rng = np.random.default_rng([seed, 50])
        test = rng.random(splits.height) < 0.5
        split = np.where(test, S.HELD_OUT, S.TRAIN)
    else:
        own = splits["split"].to_numpy()
        split = np.where((own == S.TUNING) & with_tuning, S.HELD_OUT, own)
    splits.with_columns(pl.Series("split", split)).write_parquet(out / S.SPLITS_FILE)
    return out


def site_config(hospital: Hospital, state_dir: Path):
    from fedehr.client.config import ModalityConfig, SiteConfig

    return SiteConfig(name=hospital.name, data=hospital.path, state_dir=state_dir,
                      harmonisation=hospital.harmonisation, insecure=True,
                      modalities=ModalityConfig(notes=False, images=False, pro=True))


# -- (b) and (d): real federations --------------------------------------------------------


def federation_settings(args, *, warm_start: bool) -> dict:
    return {"rounds": args.rounds, "min_sites": 3, "round_timeout": 900, "seed": 0,
            "vocabulary": {"min_count": 5},
            "model": {"preset": "tiny", "max_len": args.max_len, "notes": False,
                      "images": False, "pro": True},
            "local": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                      "train_rows": args.train_rows,
                      # (d) trains on no anchor window at all
                      "anchor_per_step": args.anchor_per_step if warm_start else 0},
            "warm_start": {"enabled": warm_start, "steps": args.warm_steps,
                           "batch_size": WARM_BATCH, "lr": WARM_LR,
                           "eval_every": warm_eval_every(args.public_patients)}}


PUBLIC_SEED = 10_000  # a public cohort's seed: the data seed plus this (never a site's draw)


def warm_eval_every(public_patients: int) -> int:
    """Steps between the warm start's tuning-loss measurements: 25 for the demo's 100
    patients (they overfit within ~100 steps); a public cohort of thousands trains for
    thousands of steps, and measuring it every 25 would cost more than the training."""
    return min(120, max(25, public_patients // 30))


def public_anchor(workdir: Path, args) -> Path:
    """--public-patients N: one synthetic hospital of the teaching hospital's case mix (its
    own seed) as the public anchor instead of the MIMIC-IV demo, through the same anchor
    path: a stand-in for a large public set such as the full MIMIC-IV, whose codes the
    sites share. Optimistic: it shares the sites' generative model."""
    from fedehr.shared.data.synth import synthesize

    (summary,) = synthesize(workdir / "public", sites=1, patients=args.public_patients,
                            seed=args.data_seed + PUBLIC_SEED, overwrite=True)
    return Path(summary.path)


def run_federation(root: Path, hospitals: list[Hospital], anchor: Path, args, *,
                   warm_start: bool, start: float) -> dict:
    from rich.console import Console

    from fedehr.server import runs
    from fedehr.server.local_federation import HospitalSpec, LocalFederation

    done = root / "federation" / "status.json"
    if args.reuse and done.exists() and json.loads(done.read_text()).get("phase") == "finished":
        log(f"  reusing the finished federation in {root}", start)
        return _finished(root, json.loads(done.read_text())["result"], seconds=float("nan"),
                         start=start)
    shutil.rmtree(root, ignore_errors=True)
    specs = [HospitalSpec(h.name, h.path, h.harmonisation) for h in hospitals]
    fed = LocalFederation.create(
        root, specs, anchor=anchor, federation=federation_settings(args, warm_start=warm_start),
        site={"privacy": {"epsilon": args.epsilon},
              "training": {"threads": 1, "max_local_steps": max(200, args.steps)},
              "modalities": {"notes": False, "images": False, "pro": True}})
    t0 = time.perf_counter()
    try:
        fed.start_all()
        result = runs.watch(fed.config, fed.launch(), Console(quiet=True),
                            timeout=args.rounds * 900 + 1800)
    finally:
        fed.stop()
    return _finished(fed.root, result, seconds=time.perf_counter() - t0, start=start)


def _finished(root: Path, result: dict, *, seconds: float, start: float) -> dict:
    from fedehr.shared.checkpoint import load

    model, vocab, card = load(result["checkpoint"])
    history = result["history"]
    for entry in history[1:]:
        losses = entry.get("site_eval_loss")  # empty unless the sites declare them public
        log(f"  round {entry['round']}: epsilon "
            + ", ".join(f"{s} {e:.2f}" for s, e in sorted(entry.get("epsilon", {}).items()))
            + (f", site eval loss {_mean(losses.values()):.3f}" if losses else ""), start)
    return {"model": model, "vocab": vocab, "seconds": seconds, "root": root,
            "result": result, "card": card.to_dict()}


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def vocab_releases(ledger_path: Path) -> list[tuple[float, float, int]]:
    """The vocabulary-release charges of a site's ledger, as (noise, rate, steps)."""
    from fedehr.client.privacy import PrivacyLedger

    doc = json.loads(ledger_path.read_text())
    ledger = PrivacyLedger.open(ledger_path, epsilon_budget=float(doc["epsilon_budget"]),
                                delta=float(doc["delta"]), accountant=doc["accountant"])
    return [e.mechanism for e in ledger.entries if e.purpose == "vocab-release"]


# -- (a) and (c): the library trainer ---------------------------------------------------


def initial_model(config, tokens=None, seed: int = 0):
    """The federation's model before its warm start: same config and vocabulary `tokens`,
    seed 0 (the sweep varies `seed` to measure how much a row owes to its start)."""
    import torch

    from fedehr.shared.model import EHRModel

    torch.manual_seed(seed)
    return EHRModel(config, tokens=tokens)


CENTRAL_EVAL_EVERY = 240  # --central-stop-early: steps between tuning-loss measurements


def site_windows(hospital: Hospital, state: Path, vocab, config):
    """The hospital's training windows, with its tuning windows as `.tuning`."""
    from fedehr.client.site_data import prepare_site_data, site_mapping
    from fedehr.shared.data import schema as S
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.tokenizer.cache import load_or_build
    from fedehr.shared.tokenizer.windows import PatientWindows

    site = site_config(hospital, state / hospital.name)
    d = prepare_site_data(site, vocab, max_len=config.max_len, note_dim=0, image_dim=0)
    dataset = MEDSDataset.open(hospital.path)
    cache = load_or_build(dataset, vocab, site_mapping(site, dataset), site.cache_dir,
                          split=S.TUNING, fingerprint=d.fingerprint)
    d.tuning = PatientWindows(cache, vocab, config.max_len)
    return d


def train_central(hospitals, vocab, config, args, workdir: Path, start=None
                  ) -> tuple[object, dict]:
    """(a): from (b)'s initial weights, or from `start` (a state dict: (b)'s warm start);
    with --central-stop-early, kept at its best loss on the pooled tuning splits."""
    from torch.utils.data import ConcatDataset

    from fedehr.shared.training import train, train_early_stopped

    data = [site_windows(h, workdir / "central", vocab, config) for h in hospitals]
    pooled = ConcatDataset([d.train for d in data])
    model = initial_model(config, vocab.tokens)
    if start is not None:
        model.load_state_dict(start)
    batch_size = min(args.central_batch_size, len(pooled))
    if args.central_stop_early:
        out = train_early_stopped(model, pooled, ConcatDataset([d.tuning for d in data]),
                                  max_steps=args.central_steps, batch_size=batch_size,
                                  lr=args.central_lr, eval_every=CENTRAL_EVAL_EVERY,
                                  patience=2)
    else:
        out = train(model, pooled, steps=args.central_steps, batch_size=batch_size,
                    lr=args.central_lr, dp=None, seed=0, num_threads=args.threads)
    return model, {"steps": out.steps, "batch_size": args.central_batch_size,
                   "patients": len(pooled), "best_step": out.best_step,
                   "tuning_loss": out.tuning_loss,
                   "seconds": out.seconds, "mean_train_loss": out.mean_loss}


def train_alone(hospital: Hospital, releases, vocab, config, args, workdir: Path, start=None
                ) -> tuple[object, dict]:
    """DP-SGD as the site trains in the federation, in one run of rounds x steps; from
    `start` (the public warm start, no privacy cost) if given."""
    from fedehr.client.privacy import PrivacyLedger
    from fedehr.client.privacy.budget import noise_for_rounds_left
    from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
    from fedehr.client.site_data import prepare_site_data

    site = site_config(hospital, workdir / "alone" / hospital.name)
    site.privacy.epsilon = args.epsilon
    data = prepare_site_data(site, vocab, max_len=config.max_len, note_dim=0, image_dim=0)
    ledger = PrivacyLedger.open(site.ledger_path, epsilon_budget=args.epsilon,
                                delta=site.privacy.delta, accountant=site.privacy.accountant)
    for i, (noise, rate, steps) in enumerate(releases):
        ledger.charge(noise, rate, steps, purpose="vocab-release", round_id=f"vocab-{i}")
    vocab_epsilon = ledger.spent()
    batch_size = min(args.batch_size, data.patients)
    steps = args.rounds * args.steps
    noise = noise_for_rounds_left(ledger, sample_rate=batch_size / data.patients,
                                  steps_planned=steps, min_noise=site.privacy.min_noise_multiplier)
    model = initial_model(config, vocab.tokens)
    if start is not None:
        model.load_state_dict(start)
    out = train_dp(model, data.train, steps=steps, batch_size=batch_size, lr=args.lr,
                   dp=DPConfig(max_grad_norm=site.privacy.max_grad_norm, noise_multiplier=noise),
                   ledger=ledger, round_id="alone", seed=1, num_threads=args.threads)
    return model, {"steps": out.steps, "batch_size": batch_size, "patients": data.patients,
                   "seconds": out.seconds, "mean_train_loss": out.mean_loss,
                   "noise_multiplier": noise, "epsilon_vocab_release": vocab_epsilon,
                   "epsilon": ledger.spent(), "delta": ledger.delta}


# options that change no trained weight: a kept (a) or (c) trained under other values of
# these is reused; any other difference trains it again
EVALUATION_ONLY = {"out", "keep", "reuse", "jobs", "threads", "probe_seeds", "pooling",
                   "zero_shot_rows", "zero_shot_samples", "zero_shot_estimator", "test_rows"}


def trained_settings(args) -> dict:
    return {k: str(v) for k, v in sorted(vars(args).items()) if k not in EVALUATION_ONLY}


def kept_arm(folder: Path, key: str, args, config):
    """(model, training) of arm `key` kept in `folder` by a run with the same settings."""
    import torch

    meta = folder / f"{key.replace(':', '-')}.json"
    if not meta.exists():
        return None
    saved = json.loads(meta.read_text())
    if saved["settings"] != trained_settings(args):
        return None
    model = initial_model(config)
    model.load_state_dict(torch.load(meta.with_suffix(".pt"), weights_only=True))
    return model, saved["training"]


def keep_arm(folder: Path, key: str, args, model, training: dict) -> None:
    """Weights first, then the settings file that marks them complete."""
    import io

    import torch

    from fedehr.shared.atomic import write_bytes, write_text

    meta = folder / f"{key.replace(':', '-')}.json"
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    write_bytes(meta.with_suffix(".pt"), weights.getvalue())
    write_text(meta, json.dumps({"settings": trained_settings(args), "training": training},
                                default=str))


def trained_line(key: str, t: dict) -> str:
    if key == "a":
        return (f"{ARMS['a']}: done in {t['seconds']:.0f}s, train loss {t['mean_train_loss']:.3f}"
                + (f", kept step {t['best_step']} (tuning loss {t['tuning_loss']:.3f})"
                   if t.get("best_step") else ""))
    return (f"(c) {key[2:]} alone: {t['steps']} DP steps, noise {t['noise_multiplier']:.3f}, "
            f"epsilon {t['epsilon']:.2f} (vocab release {t['epsilon_vocab_release']:.2f}), "
            f"{t['seconds']:.0f}s")


# -- evaluation -------------------------------------------------------------------------


def warm_start_of(federation_root: Path):
    """The model a federation published after its anchor warm start (round 0)."""
    from fedehr.shared.checkpoint import load

    model, _, _ = load(federation_root / "federation" / "checkpoints" / "round-0000")
    return model


def mapping_of(hospital: Hospital, workdir: Path):
    from fedehr.client.site_data import site_mapping
    from fedehr.shared.data.dataset import MEDSDataset

    dataset = MEDSDataset.open(hospital.view)
    return dataset, site_mapping(site_config(hospital, workdir / "eval" / hospital.name), dataset)


def evaluate_arm(model, vocab, hospital: Hospital, args, workdir: Path):
    import torch

    from fedehr.shared.clinical.evaluate import evaluate

    torch.set_num_threads(args.threads)
    dataset, mapping = mapping_of(hospital, workdir)
    return evaluate((model, vocab), dataset, tasks=TASKS, ks=(64, "all"), seeds=args.probe_seeds,
                    zero_shot_samples=0, mapping=mapping, batch_size=64, pooling=args.pooling)


def evaluate_on(model, vocab, hospital: Hospital, args, workdir: Path) -> tuple[dict, dict]:
    """`evaluate_arm`'s summary (with its seconds) and k=all predictions: what a worker
    process hands back."""
    result = evaluate_arm(model, vocab, hospital, args, workdir)
    return {"summary": summarise(result), "seconds": result.seconds}, predictions(result)


def summarise(result) -> dict:
    """task -> method label -> mean scores, plus the sizes; k=all predictions kept aside."""
    out = {}
    for t in result.tasks:
        out[t.task] = {"n_test": t.n_test, "positives_test": t.positives_test,
                       "n_train": t.n_train, "notes": t.notes,
                       "methods": {m.label: {"auroc": _num(m.mean("auroc")),
                                             "auprc": _num(m.mean("auprc")),
                                             "auroc_sd": _num(m.std("auroc")), "runs": len(m.runs)}
                                   for m in t.methods}}
    return out


def predictions(result, label: str = "probe k=all") -> dict:
    """task -> (y_true, probability) of one method's first run."""
    out = {}
    for t in result.tasks:
        m = next((m for m in t.methods if m.label == label), None)
        if m is not None:
            out[t.task] = (m.y_true, m.probability)
    return out


def _num(x) -> float | None:
    import math

    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def zero_shot_vs_probe(model, vocab, hospital: Hospital, probe_preds: dict, args,
                       workdir: Path) -> dict:
    """Zero-shot AUROC of `model` on a seeded subset of the test rows of each task, and the
    k=all probe's AUROC on exactly those rows (`zero_shot_answers`, then `against_probe`)."""
    return against_probe(zero_shot_answers(model, vocab, hospital, args, workdir),
                         probe_preds, args)


def zero_shot_answers(model, vocab, hospital: Hospital, args, workdir: Path) -> dict:
    """task -> the zero-shot answers of `model` on a seeded subset of the task's test rows.

    Each row's probability is over its decided continuations (the window closed:
    outcome, horizon, closing event, death); `truncated_share` is the share of
    continuations left undecided (out of tokens), `unanswered_rows` the rows with
    none decided (left out of the AUROC). `budget` is the token budget the
    question's horizon and the data gave, `reach_days` quantiles of how far the
    continuations' clocks got, against the window's `horizon_days`. `y` (every test
    row's label), `rows` and `probability` are kept for `against_probe`."""
    import numpy as np
    import polars as pl

    from fedehr.shared.clinical import labels as L
    from fedehr.shared.clinical import zero_shot
    from fedehr.shared.clinical.evaluate import subject_split
    from fedehr.shared.clinical.query import outcome_from_task

    dataset, mapping = mapping_of(hospital, workdir)
    tasks = [L.load_task(t) for t in TASKS]
    pred_path = L.predicates_path(None, dataset)
    all_labels = L.extract_many(dataset, tasks, pred_path)
    subjects = np.concatenate([lab[L.SUBJECT_ID].to_numpy() for lab in all_labels])
    _, test_ids, _ = subject_split(dataset, subjects)
    max_tokens = getattr(args, "zero_shot_max_tokens", None)
    estimator = getattr(args, "zero_shot_estimator", "expected")
    out = {}
    for task, lab in zip(tasks, all_labels, strict=True):
        test = lab.filter(pl.col(L.SUBJECT_ID).is_in(list(test_ids)))
        y = test[L.BOOLEAN_VALUE].to_numpy().astype(bool)
        if not 0 < y.sum() < len(y):
            out[task.name] = {"y": y}
            continue
        rng = np.random.default_rng([0, len(y)])
        pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
        n_pos = min(len(pos), args.zero_shot_rows // 2)
        n_neg = min(len(neg), args.zero_shot_rows - n_pos)
        rows = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False),
                                       rng.choice(neg, n_neg, replace=False)]))
        outcome = outcome_from_task(task.config, predicates=L.dataset_predicates(pred_path))
        t0 = time.perf_counter()
        answer = zero_shot.predict_detailed(model, vocab, dataset, test[rows.tolist()], outcome,
                                            samples=args.zero_shot_samples, seed=0,
                                            batch_size=256, mapping=mapping,
                                            max_new_tokens=max_tokens,
                                            estimator=estimator)
        frame, sim = answer.frame, answer.simulation
        prob = frame["probability"].cast(pl.Float64).to_numpy()
        if task.label_negated:  # as evaluate does: the label window asks the complement
            prob = 1.0 - prob
        reach = sim.reach_days
        answers = len(rows) * args.zero_shot_samples
        out[task.name] = {"y": y, "rows": rows, "probability": prob, "positives": int(n_pos),
                          "estimator": estimator,
                          # continuations that ran out of tokens before their window
                          # closed: reported, left out of the probability
                          "truncated_share": round(float(frame["truncated"].sum()) / answers, 4),
                          # the model's chance of a discharge, death or the outcome before
                          # the prediction time (against the history): weighted out
                          "left_early": round(float(frame["left_early"].mean()), 4),
                          "budget": sim.max_new_tokens,
                          "horizon_days": round(outcome.horizon.total_seconds() / 86400, 2),
                          "reach_days": {q: round(float(np.quantile(reach, f)), 2)
                                         for q, f in (("p10", 0.1), ("p50", 0.5),
                                                      ("p90", 0.9))},
                          "generated_tokens": sim.generated_tokens,
                          "seconds": round(time.perf_counter() - t0, 1)}
    return out


def against_probe(answers: dict, probe_preds: dict, args) -> dict:
    """`zero_shot_answers` scored beside the k=all probe (`probe_preds`) on the same rows."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    out = {}
    for task, a in answers.items():
        y = a["y"]
        if "rows" not in a or task not in probe_preds or len(probe_preds[task][0]) != len(y):
            out[task] = {"note": "no comparable probe predictions or one class only"}
            continue
        y_probe, p_probe = probe_preds[task]
        if not np.array_equal(np.asarray(y_probe, bool), y):
            raise RuntimeError(f"{task}: the probe's test rows are not the labels' rows")
        rows, prob = a["rows"], a["probability"]
        answered = ~np.isnan(prob)
        y_rows, p_rows = y[rows][answered], np.asarray(p_probe)[rows][answered]
        both = 0 < y_rows.sum() < len(y_rows)
        zs = float(roc_auc_score(y_rows, prob[answered])) if both else float("nan")
        probe = float(roc_auc_score(y_rows, p_rows)) if both else float("nan")
        out[task] = {"rows": int(len(rows)), "positives": a["positives"],
                     "samples": args.zero_shot_samples, "estimator": a["estimator"],
                     "zero_shot_auroc": _num(zs),
                     "constant": bool(np.ptp(prob[answered]) == 0) if answered.any() else True,
                     "probe_all_auroc_same_rows": _num(probe),
                     "ratio": round(zs / probe, 4) if both and probe > 0 else None,
                     "truncated_share": a["truncated_share"],
                     "left_early": a["left_early"],
                     "unanswered_rows": int((~answered).sum()),
                     "budget": a["budget"], "horizon_days": a["horizon_days"],
                     "reach_days": a["reach_days"],
                     "mean_probability": _num(float(np.nanmean(prob))),
                     "observed_rate": round(float(y[rows].mean()), 4),
                     "generated_tokens": a["generated_tokens"], "seconds": a["seconds"]}
    return out


def rank_auroc(y, p) -> float:
    """AUROC as the Mann-Whitney statistic (ties count half): sklearn's value, faster."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(y, bool)
    pos = int(y.sum())
    ranks = rankdata(p)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos)))


def paired_gap(y, p_ref, p_arm, seed: int = 0) -> tuple[float, float, float]:
    """AUROC(ref) - AUROC(arm) on the same rows, with a paired bootstrap 95 % interval."""
    import numpy as np

    y = np.asarray(y, bool)
    gap = rank_auroc(y, p_ref) - rank_auroc(y, p_arm)
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            gaps.append(rank_auroc(y[i], p_ref[i]) - rank_auroc(y[i], p_arm[i]))
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return float(gap), float(lo), float(hi)


# -- report -------------------------------------------------------------------------------


def auroc(evals: dict, arm: str, where: str, task: str, label: str) -> float | None:
    entry = evals.get(arm, {}).get(where)
    if entry is None:
        return None
    return entry["summary"].get(task, {}).get("methods", {}).get(label, {}).get("auroc")


def markdown_table(evals: dict, sets: list[str], alone: list[str], zero: dict,
                   label: str) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    head = (["set", "task", "test (pos)", "counts", "(0) untrained", "(w) warm start",
             "(a) central", "(b) fed DP", "(d) fed no anchor"]
            + [f"(c) {s} alone" for s in alone] + ["zero-shot (b)*"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for where in sets:
        for task in TASKS:
            s = evals["b"][where]["summary"].get(task, {})
            counts_label = "counts k=all" if label.endswith("all") else "counts k=64"
            row = [where, task, f"{s.get('n_test', 0)} ({s.get('positives_test', 0)})",
                   f(auroc(evals, "b", where, task, counts_label))]
            row += [f(auroc(evals, arm, where, task, label))
                    for arm in ("0", "w", "a", "b", "d")]
            row += [f(auroc(evals, f"c:{s_}", where, task, label)) for s_ in alone]
            z = zero.get(where, {}).get(task, {})
            row.append("-" if "zero_shot_auroc" not in z else
                       f"{z['zero_shot_auroc']:.3f} vs {z['probe_all_auroc_same_rows']:.3f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def enough(y) -> bool:
    import numpy as np

    y = np.asarray(y, bool)
    return min(int(y.sum()), int((~y).sum())) >= MIN_CLASS


def target_checks(evals, preds, sites: list[str], left_out: str, zero: dict) -> list[dict]:
    import numpy as np

    label = "probe k=all"
    checks = []
    # 1. (b) within 0.03 AUROC of (a) on every task (each set, and the training sites' mean)
    for task in TASKS:
        rows = []
        ok = True
        for where in [*sites, left_out]:
            a, b = preds["a"][where].get(task), preds["b"][where].get(task)
            if a is None or b is None:
                ok = False
                rows.append(f"{where}: missing")
                continue
            if not enough(a[0]):
                rows.append(f"{where}: not judged ({int(np.sum(a[0]))} of {len(a[0])} "
                            f"positive, under {MIN_CLASS} per class)")
                continue
            gap, lo, hi = paired_gap(a[0], np.asarray(a[1]), np.asarray(b[1]))
            ok &= gap <= TARGET_GAP
            rows.append(f"{where} {gap:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        mean_a = _mean(auroc(evals, "a", s, task, label) or np.nan for s in sites)
        mean_b = _mean(auroc(evals, "b", s, task, label) or np.nan for s in sites)
        checks.append({"target": 1, "task": task, "pass": bool(ok),
                       "text": "(a) - (b) AUROC, k=all probe, 95% paired bootstrap: "
                               + "; ".join(rows)
                               + f"; training-site mean (a) {mean_a:.3f} (b) {mean_b:.3f}"})
    # 2. (b) better than every (c): on each site's own patients and on the left-out hospital
    for task in TASKS:
        rows = []
        ok = True
        for site in sites:
            for where in (site, left_out):
                b = auroc(evals, "b", where, task, label)
                c = auroc(evals, f"c:{site}", where, task, label)
                if b is None or c is None:
                    ok = False
                    rows.append(f"c:{site}@{where}: missing")
                    continue
                y = preds["b"][where][task][0]
                if not enough(y):
                    rows.append(f"{site} alone @{where}: not judged ({int(np.sum(y))} of "
                                f"{len(y)} positive)")
                    continue
                ok &= b > c
                rows.append(f"{site} alone @{where}: (b) {b:.3f} vs (c) {c:.3f}")
        checks.append({"target": 2, "task": task, "pass": bool(ok), "text": "; ".join(rows)})
    # 3. zero-shot at least 0.9x the all-data probe (same rows)
    for where, per_task in zero.items():
        for task in TASKS:
            z = per_task.get(task, {})
            if "ratio" not in z or z["ratio"] is None:
                checks.append({"target": 3, "task": task, "pass": False,
                               "text": f"{where}: {z.get('note', 'not measured')}"})
                continue
            # a constant answer carries no information, whatever the probe scored
            checks.append({"target": 3, "task": task,
                           "pass": z["ratio"] >= ZERO_SHOT_RATIO and not z["constant"],
                           "text": f"{where}: zero-shot {z['zero_shot_auroc']:.3f} vs probe "
                                   f"k=all {z['probe_all_auroc_same_rows']:.3f} on the same "
                                   f"{z['rows']} rows ({z['positives']} positive): ratio "
                                   f"{z['ratio']:.3f}; {z['truncated_share']:.0%} of the "
                                   "continuations ran out undecided"
                                   + ("; the answers are all equal" if z["constant"] else "")})
    return checks


def plot(evals: dict, sets: list[str], alone: list[str], zero: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series = [("counts", "b", "counts k=all", "#999999"), (ARMS["0"], "0", None, "#dddddd"),
              (ARMS["w"], "w", None, "#bcbd22"), (ARMS["a"], "a", None, "#1f77b4"),
              (ARMS["b"], "b", None, "#d62728"), (ARMS["d"], "d", None, "#ff7f0e")]
    series += [(f"(c) {s} alone", f"c:{s}", None, c)
               for s, c in zip(alone, ("#2ca02c", "#98df8a", "#006400"), strict=False)]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.2), sharey=True)
    x = np.arange(len(TASKS))
    width = 0.8 / (len(series) + 1)
    for ax, where in zip(np.atleast_1d(axes), sets, strict=True):
        for j, (name, arm, label, color) in enumerate(series):
            vals = [auroc(evals, arm, where, t, label or "probe k=all") for t in TASKS]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + j * width, vals, width, label=name, color=color)
        zs = [zero.get(where, {}).get(t, {}).get("zero_shot_auroc") for t in TASKS]
        if any(v is not None for v in zs):
            ax.bar(x + len(series) * width, [np.nan if v is None else v for v in zs], width,
                   label="zero-shot (b), subset", color="#9467bd")
        ax.axhline(0.5, color="black", lw=0.6, ls=":")
        ax.set_xticks(x + 0.4 - width / 2, [t.replace("_", "\n") for t in TASKS], fontsize=8)
        ax.set_title(where + (" (left out)" if where == sets[-1] else " unseen patients"),
                     fontsize=9)
        ax.set_ylim(0.3, 1.0)
    np.atleast_1d(axes)[0].set_ylabel("AUROC (k=all probe; counts baseline)")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------


def parse(argv):
    from fedehr.server.config import TrainSpec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: .venv/bin/python benchmarks/"
                                            "fed_vs_central.py --quick")
    parser.add_argument("--patients", type=int, default=6000,
                        help="in all, over 4 hospitals in shares 4:3:2:1")
    parser.add_argument("--rounds", type=int, default=4, help="federated rounds")
    # the recipe benchmarks/dp_recipe_sweep.py chose on the tuning splits (batch128-lr4x)
    parser.add_argument("--steps", type=int, default=20, help="local DP steps per site per round")
    parser.add_argument("--batch-size", type=int, default=128, help="expected batch, every arm")
    parser.add_argument("--lr", type=float, default=8e-3, help="learning rate of the DP arms")
    parser.add_argument("--train-rows", default="all", choices=("all", "site"),
                        help="federation.yaml local.train_rows of (b) and (d)")
    # (a): the sweep's "central" recipe (tuning splits)
    parser.add_argument("--anchor-per-step", type=int, default=TrainSpec.anchor_per_step,
                        help="public anchor windows in every DP-SGD batch of (b) "
                        "(local.anchor_per_step; default: federation.yaml's)")
    parser.add_argument("--central-steps", type=int, default=1920, help="optimizer steps of (a)")
    parser.add_argument("--central-batch-size", type=int, default=32)
    parser.add_argument("--central-lr", type=float, default=2e-3)
    parser.add_argument("--central-warm", action=argparse.BooleanOptionalAction, default=False,
                        help="(a) starts from (b)'s public anchor warm start (its round-0 "
                        "checkpoint) instead of (b)'s initial weights")
    parser.add_argument("--central-stop-early", action=argparse.BooleanOptionalAction,
                        default=False,
                        help="(a) measures its loss on the pooled tuning splits every "
                             f"{CENTRAL_EVAL_EVERY} steps, stops after 2 measurements "
                             "without a new best and keeps the best weights (warm-up, cosine "
                             "decay, clipping at 1)")
    parser.add_argument("--alone-warm", action=argparse.BooleanOptionalAction, default=False,
                        help="(c) starts from (b)'s anchor warm start (public data: no "
                             "privacy cost), as a hospital alone could")
    parser.add_argument("--pooling", default="last+mean", choices=("last", "last+mean"),
                        help="the probes' patient vector: the last position's hidden state, "
                        "or that and the mean over the history's positions")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--warm-steps", type=int, default=300,
                        help="anchor warm start of (b): the most steps (it stops early)")
    parser.add_argument("--public-patients", type=int, default=0,
                        help="the public anchor is a synthetic hospital of this many patients "
                        "(the teaching hospital's case mix, its own seed) instead of the "
                        "MIMIC-IV demo: a stand-in for a large public set (0: the demo; "
                        "with it, --warm-steps 2400 --lr 1e-3, chosen in dp_recipe_sweep.py)")
    parser.add_argument("--epsilon", type=float, default=8.0, help="per site, (b), (c), (d)")
    parser.add_argument("--left-out", default="hospital_c")
    parser.add_argument("--probe-seeds", type=int, default=3, help="repeats of the k=64 probe")
    parser.add_argument("--zero-shot-rows", type=int, default=60,
                        help="test rows per task answered zero-shot (left-out hospital)")
    parser.add_argument("--zero-shot-samples", type=int, default=8, help="futures per row")
    parser.add_argument("--zero-shot-estimator", default="expected",
                        choices=("expected", "counted"),
                        help="each future's weight: its summed outcome hazard, or 0/1")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (2 threads on 2 busy cores "
                             "measured 10x slower per step than 1)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="(a) and the (c) arms train in this many processes side by side "
                             "(each on --threads threads)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--test-rows", default="held-out", choices=("held-out", "tuning+held-out"),
                        help="a training hospital's test rows: its held_out split only (the "
                        "sweep chooses on tuning rows), or tuning too (results before "
                        "2026-12-05 evening)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2,000 patients, 1 round x 5 steps, small zero-shot")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the work folder (hospitals, federations) here")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: reuse federations that finished there (same "
                             "settings assumed) and (a) and (c) kept there by a run with the "
                             "same training settings; the evaluations are redone")
    args = parser.parse_args(argv)
    if args.central_stop_early and args.test_rows != "held-out":
        parser.error("--central-stop-early stops on the tuning rows: use --test-rows held-out")
    if args.quick:
        args.patients, args.rounds, args.steps, args.warm_steps = 2000, 1, 5, 10
        args.central_steps = 15
        args.max_len, args.probe_seeds = 64, 1
        args.zero_shot_rows, args.zero_shot_samples = 20, 2
        if args.out == RESULTS:
            args.out = RESULTS.with_name("fed_vs_central-quick.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)  # before polars is imported
    import torch

    torch.set_num_threads(args.threads)
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.synth import synthesize

    start = time.perf_counter()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="fedehr-fed-vs-central-")).resolve()
    timings: dict[str, float] = {}
    try:
        if args.jobs < 1:
            raise SystemExit("--jobs must be at least 1")
        if args.reuse and args.keep is None:
            raise SystemExit("--reuse needs --keep FOLDER (where the federations ran)")
        for stale in ("views", "central", "alone", "eval"):
            shutil.rmtree(workdir / stale, ignore_errors=True)
        summaries = synthesize(workdir / "hospitals", sites=4, patients=args.patients,
                               seed=args.data_seed, overwrite=args.reuse)
        hospitals = {s.name: Hospital(s.name, Path(s.path), s.harmonisation) for s in summaries}
        if args.left_out not in hospitals:
            raise SystemExit(f"--left-out: no hospital {args.left_out!r}; "
                             f"use one of {', '.join(hospitals)}")
        sites = [h for h in hospitals.values() if h.name != args.left_out]
        left = hospitals[args.left_out]
        for h in hospitals.values():
            h.view = evaluation_view(h, workdir / "views" / h.name,
                                     left_out=h is left, seed=args.data_seed,
                                     with_tuning=args.test_rows == "tuning+held-out")
        log("hospitals: " + ", ".join(f"{s.name} {s.subjects} patients"
                                      + (" (local lab codes)" if s.local_codes else "")
                                      + (" LEFT OUT" if s.name == args.left_out else "")
                                      for s in summaries), start)
        anchor = public_anchor(workdir, args) if args.public_patients else fetch_anchor()

        def federate(arm: str) -> dict:
            log(f"{ARMS[arm]}: federation of {', '.join(h.name for h in sites)}, "
                f"{args.rounds} rounds x {args.steps} local steps", start)
            out = run_federation(workdir / f"fed-{arm}", sites, anchor, args,
                                 warm_start=arm == "b", start=start)
            took = out["seconds"]  # nan: reused from --keep
            log(f"{ARMS[arm]}: " + ("reused" if math.isnan(took) else f"done in {took:.0f}s")
                + f", {len(out['vocab'].tokens)} tokens", start)
            return out

        fed = {"b": federate("b")}
        vocab, config = fed["b"]["vocab"], fed["b"]["model"].config
        models: dict[str, object] = {"b": fed["b"]["model"]}
        vocabs: dict[str, object] = {"b": vocab}
        # the floor: what a probe reads from the architecture's initial weights, untrained
        models["0"], vocabs["0"] = initial_model(config, vocab.tokens), vocab
        training: dict[str, dict] = {}
        set_names = [h.name for h in sites] + [left.name]
        evals: dict[str, dict] = {}
        preds: dict[str, dict] = {}

        # Everything after (b) shares the cores: (d) federates (its own processes) while
        # `jobs` processes train (a) and (c), answer zero-shot with (b) and evaluate each
        # arm once it is trained; (a), the longest, goes first.
        log(f"{ARMS['a']} ({args.central_steps} steps on pooled data"
            + (", from (b)'s anchor warm start" if args.central_warm else "")
            + f"), (c), (d), zero-shot and evaluation: {args.jobs} processes and (d)'s "
            "federation side by side", start)
        # (w), the public model every site receives before round 1: what do the DP rounds add?
        models["w"], vocabs["w"] = warm_start_of(fed["b"]["root"]), vocab
        warm = models["w"].state_dict()
        kept = workdir / "trained"  # (a) and (c), for --reuse
        t0 = time.perf_counter()
        with ThreadPoolExecutor(1) as background, \
                ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                    initializer=torch.set_num_threads,
                                    initargs=(args.threads,)) as pool:
            fed_d = background.submit(federate, "d")
            trains = {"a": partial(pool.submit, train_central, sites, vocab, config, args,
                                   workdir, warm if args.central_warm else None)}
            for h in sites:
                releases = vocab_releases(fed["b"]["root"] / "site-state" / h.name
                                          / "privacy-ledger.json")
                trains[f"c:{h.name}"] = partial(pool.submit, train_alone, h, releases, vocab,
                                                config, args, workdir,
                                                warm if args.alone_warm else None)
            reused = {k: kept_arm(kept, k, args, config) if args.reuse else None for k in trains}
            running = {k: submit() for k, submit in trains.items() if reused[k] is None}
            zero_job = pool.submit(zero_shot_answers, models["b"], vocab, left, args, workdir)
            evaluating = {}

            def evaluate_later(arm: str) -> None:
                targets = [hospitals[arm[2:]], left] if arm.startswith("c:") else [*sites, left]
                for h in targets:
                    evaluating[arm, h.name] = pool.submit(evaluate_on, models[arm], vocabs[arm],
                                                          h, args, workdir)

            for arm in ("b", "0", "w"):
                evaluate_later(arm)

            def trained(key: str, model, about: dict, seconds: float, note: str = "") -> None:
                models[key], vocabs[key], training[key], timings[key] = model, vocab, about, seconds
                log(trained_line(key, about) + note, start)
                evaluate_later(key)

            for key in [k for k in trains if k not in running]:
                trained(key, *reused[key], math.nan, " (reused)")
            for job in as_completed(running.values()):
                key = next(k for k, v in running.items() if v is job)
                model, about = job.result()
                if args.keep is not None:
                    keep_arm(kept, key, args, model, about)
                trained(key, model, about, about["seconds"])
            fed["d"] = fed_d.result()
            models["d"], vocabs["d"] = fed["d"]["model"], fed["d"]["vocab"]
            evaluate_later("d")
            for arm in ("b", "d"):
                timings[arm] = fed[arm]["seconds"]
                res = fed[arm]["result"]
                training[arm] = {"seconds": fed[arm]["seconds"], "rounds": res["rounds"],
                                 "privacy": res.get("privacy"), "history": res.get("history"),
                                 "vocab_tokens": len(vocabs[arm].tokens)}
            # Evaluation: every arm on every training site and the left-out hospital; (c)
            # on its own site and the left-out hospital.
            for (arm, name), job in evaluating.items():
                evals.setdefault(arm, {})[name], preds.setdefault(arm, {})[name] = job.result()
                line = ", ".join(f"{t} {auroc(evals, arm, name, t, 'probe k=all')}"
                                 for t in TASKS)
                log(f"evaluated {arm} on {name} ({evals[arm][name]['seconds']:.0f}s): "
                    f"k=all {line}", start)
            answers = zero_job.result()
        timings["after_b"] = time.perf_counter() - t0
        timings["evaluation"] = sum(e["seconds"] for arm in evals.values() for e in arm.values())
        timings["zero_shot"] = sum(a.get("seconds", 0.0) for a in answers.values())
        zero = {left.name: against_probe(answers, preds["b"][left.name], args)}
        log(f"zero-shot (b) on {left.name}: " + ", ".join(
            f"{t} {z.get('zero_shot_auroc')}" for t, z in zero[left.name].items()), start)

        alone = [h.name for h in sites]
        table_all = markdown_table(evals, set_names, alone, zero, "probe k=all")
        table_64 = markdown_table(evals, set_names, alone, {}, "probe k=64")
        checks = target_checks(evals, preds, alone, left.name, zero)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    total = time.perf_counter() - start
    about = notes(args, training, left.name)
    print("\nNotes:\n" + "\n".join(f"- {n}" for n in about))
    print("\nAUROC, logistic probe on frozen embeddings, k = all training rows "
          "(counts: the count-feature baseline, k = all)")
    print(table_all)
    print("\nAUROC, probe k = 64 (mean over seeds; counts baseline also k = 64)")
    print(table_64)
    print("\n* zero-shot (b) vs the k=all probe of (b) on the same subset of test rows")
    print(f"\nTargets (probe k=all; (c) compared on its own site's patients and on "
          f"{left.name}):")
    for c in checks:
        print(f"  target {c['target']} {c['task']:<16} {'PASS' if c['pass'] else 'FAIL'}: "
              f"{c['text']}")
    verdict = {n: all(c["pass"] for c in checks if c["target"] == n) for n in (1, 2, 3)}
    print("  overall: " + ", ".join(f"target {n} {'PASS' if ok else 'FAIL'}"
                                    for n, ok in verdict.items()))
    print(f"\ntotal {total:.0f}s on {args.threads} threads; "
          + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))

    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(evals, set_names, alone, zero, png)
    from fedehr.shared.atomic import write_text

    report = {
        "benchmark": "fed_vs_central",
        "data_seeds": [args.data_seed],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "hospitals": [{"name": s.name, "patients": s.subjects, "events": s.events,
                       "local_codes": s.local_codes, "left_out": s.name == args.left_out}
                      for s in summaries],
        "budgets": {"a": "the sweep's central recipe (--central-steps of --central-batch-size "
                          "at --central-lr), non-private, pooled train splits",
                    "b": "rounds x steps DP steps per site + anchor warm start",
                    "c": "rounds x steps DP steps, ledger pre-charged with (b)'s vocab release"
                         + (", from (b)'s anchor warm start" if args.alone_warm else ""),
                    "d": "as (b) without the anchor warm start; own vocabulary round",
                    "0": "none: the initial weights every arm starts from (a floor)",
                    "w": "(b)'s anchor warm start alone (round 0): public data only"},
        "notes": about,
        "training": training,
        "evaluation": {arm: {w: e for w, e in per.items()} for arm, per in evals.items()},
        "zero_shot": zero,
        "checks": checks,
        "verdict": {f"target_{n}": ok for n, ok in verdict.items()},
        "table_k_all": table_all,
        "table_k_64": table_64,
        "timings_seconds": timings,
        "total_seconds": total,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    write_text(args.out, json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
