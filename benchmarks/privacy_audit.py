"""Empirical privacy audit of one site's DP-SGD run (issue 13), in one training run.

Steinke, Nasr and Jagielski 2023, "Privacy auditing with one (1) training
run": m white-box gradient canaries (Dirac canaries, `fedehr.client.privacy.
one_run_audit`) are planted in one DP-SGD run of a synthetic hospital at the
demo's settings (`fedehr demo`: the tiny model, local batch 32, lr 2e-3, the
site's noise for an epsilon-8 budget over 3 rounds of 30 steps, never below
site.yaml's min_noise_multiplier 0.5), each included with probability 1/2
and sampled like a patient. The canaries sit on the token embedding, where
the audit (white-box) knows data gradients are absent: the rows of public
codes the site never has (a shared vocabulary holds other sites' codes). The
table prints, per arm and for two guess sets fixed in advance (a few confident
guesses, k in and k out; and many "in" guesses), the epsilon lower bound at
97.5% confidence each (95% for the pair), the ledger's epsilon for the run, and
the best bound the audit could certify with that many guesses. Only the many-
guess set can certify more than 8: with r guesses all right the bound is
ln(p / (1 - p)) for p = 0.025^(1/r).

Arms:
  demo      the site's DP-SGD path as it runs in the federation;
  control   the same run with the noise silently dropped (a planted bug; the
            ledger still charges the nominal noise): the audit must find a
            lower bound above the ledger's epsilon.

    .venv/bin/python benchmarks/privacy_audit.py --out benchmarks/results/privacy_audit.json

Both arms train on one CPU thread; a run takes well under a minute per arm.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=667, help="one of the demo's 3 sites")
    parser.add_argument("--canaries", type=int, default=40000)
    parser.add_argument("--few", type=int, default=100,
                        help="first guess set: this many 'in' and as many 'out'")
    parser.add_argument("--many", type=int, default=18000,
                        help="second guess set: this many 'in', no 'out'")
    parser.add_argument("--steps", type=int, default=90, help="3 rounds x 30 local steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--absent-codes", type=int, default=500,
                        help="public codes absent at the site, whose embedding rows hold "
                        "the canaries")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from fedehr.client.config import ModalityConfig, PrivacyConfig, SiteConfig
    from fedehr.client.privacy import PrivacyLedger
    from fedehr.client.privacy.budget import noise_for_rounds_left
    from fedehr.client.privacy.dp_sgd import DPConfig
    from fedehr.client.privacy.one_run_audit import audit_dp_sgd, noise_silently_off
    from fedehr.client.site_data import prepare_site_data
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.data.synth import synthesize
    from fedehr.shared.model import EHRModel, ModelConfig
    from fedehr.shared.tokenizer.vocabulary import Vocabulary

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="privacy-audit-"))
    (summary,) = synthesize(work / "h", sites=1, patients=args.patients, seed=args.seed)
    site = SiteConfig(name="hospital_a", data=Path(summary.path), state_dir=work / "state",
                      insecure=True, privacy=PrivacyConfig(epsilon=args.epsilon, delta=1e-5),
                      modalities=ModalityConfig(notes=False, images=False, pro=False))
    codes = MEDSDataset.open(site.data).codes()["code"].to_list()
    # A shared vocabulary holds codes a site never has (other sites', the anchor's):
    # their embedding rows get no gradient from this site's data.
    absent = [f"PUBLIC//absent-{i:04d}" for i in range(args.absent_codes)]
    vocab = Vocabulary.build({c: 10 for c in [*codes, *absent]}, min_count=1)
    config = ModelConfig.preset("tiny", len(vocab), note_dim=0, image_dim=0)
    data = prepare_site_data(site, vocab, max_len=config.max_len, note_dim=0, image_dim=0)
    batch_size = min(args.batch_size, len(data.train))
    sample_rate = batch_size / len(data.train)
    ledger = PrivacyLedger.open(work / "ledger.json", epsilon_budget=args.epsilon, delta=1e-5)
    noise = noise_for_rounds_left(ledger, sample_rate=sample_rate, steps_planned=args.steps,
                                  min_noise=site.privacy.min_noise_multiplier)
    dp = DPConfig(max_grad_norm=site.privacy.max_grad_norm, noise_multiplier=noise,
                  delta=1e-5)
    embedding = next(n for n, p in EHRModel(config).named_parameters() if "emb" in n)

    rows = []
    for arm in ("demo", "control"):
        torch.manual_seed(args.seed)
        model = EHRModel(config)
        started = time.perf_counter()
        run = dict(dp=dp, steps=args.steps, batch_size=batch_size, lr=args.lr,
                   canaries=args.canaries, seed=args.seed + 1,
                   within=embedding, rows=[vocab.id(c) for c in absent])
        if arm == "control":
            with noise_silently_off():
                audited = audit_dp_sgd(model, data.train, **run)
        else:
            audited = audit_dp_sgd(model, data.train, **run)
        seconds = round(time.perf_counter() - started, 1)
        # two guess sets fixed in advance, each at 97.5%: 95% for the pair (Bonferroni)
        for k_in, k_out in ((args.few, args.few), (args.many, 0)):
            result = audited.judge(k_in, k_out, confidence=0.975)
            rows.append({"arm": arm, "noise_multiplier": 0.0 if arm == "control" else noise,
                         "sample_rate": sample_rate, "steps": args.steps,
                         "canaries": result.canaries, "guess_in": k_in, "guess_out": k_out,
                         "correct": result.correct,
                         "epsilon_lower_bound": round(result.epsilon_lower_bound, 3),
                         "epsilon_ledger": round(result.epsilon_ledger, 3),
                         "best_certifiable": round(result.best_certifiable, 3),
                         "seconds": seconds})
    print(f"{'arm':8} {'noise':>6} {'in/out':>11} {'correct':>7} {'eps lower bound':>16} "
          f"{'eps ledger':>11} {'best certifiable':>17}")
    for r in rows:
        print(f"{r['arm']:8} {r['noise_multiplier']:6.3f} {r['guess_in']:>5}/{r['guess_out']:<5} "
              f"{r['correct']:7d} {r['epsilon_lower_bound']:16.3f} "
              f"{r['epsilon_ledger']:11.3f} {r['best_certifiable']:17.3f}")
    if args.out is not None:
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)},
                                        "embedding": embedding, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
