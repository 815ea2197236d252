"""Which DP-SGD recipe makes a federated model worth pulling: a sweep on tuning splits.

Why (b) fed DP sits far below (a) central (issue 12) is measured here in one
process, without Flower: FedAvg over the three training hospitals of the
synthetic world (the same `synthesize` draw and harmonisation as
benchmarks/fed_vs_central.py), each site's round being DP-SGD through the
library trainer at the site's budget (epsilon 8 minus its vocabulary release,
delta 1e-5, RDP, noise solved for all its planned steps). Every recipe is
scored on the hospitals' *tuning* splits only (next-token loss and the k=all
probe AUROC for mortality and long stay): the test rows of fed_vs_central are
never looked at, so the choice made here is fair to use there.

The vocabulary is built from the anchor plus the sites' exact counts (a
nuisance variable for this comparison; the real federation releases noised
counts). A recipe is a row of `RECIPES`:

    batch     expected Poisson batch per step (sample rate = batch / patients)
    steps     local DP steps per round;  rounds: federated rounds
    lr        learning rate;  opt: adamw or sgd (momentum 0.9)
    clip      per-patient clipping norm
    train     which parameters train under DP: all, "no-emb" (token
              embeddings and output head frozen after the warm start), or
              "site-rows" (only the embedding and output rows of tokens some
              site holds move; the anchor-only rows keep the warm start)
    warm      non-private anchor steps before round 1 (public data)
    warm_stop with warm: early stopping on the anchor's tuning split, `warm` the most
              (cosine-decayed rate, clipped: the federation's warm start since issue 12)
    anchor_per_round   non-private anchor steps after each aggregation
    float16   each site's update goes through local.update_compression: float16
              (sent as float16 differences, rebuilt by the server)
    float16_download  the sites start from the model rounded to float16
              (local.download_compression); the server keeps float32
    death_weight      a MEDS_DEATH target counts this many times in an example's loss
                      (generation then lowers the death logit by log(death_weight))
    keep_death_row    the death token's embedding and output rows keep the warm start
    interpolate       also score warm + a x (final - warm) for each a (the server
                      stepping back towards the public warm start after the last round)
    noise_scale       times the noise the budget allows (0: clipping only, no privacy; a
                      diagnostic that separates what the noise does from what the data does)
    epsilon           each site's budget (8; larger only as a diagnostic of how much privacy
                      the features would cost)
    pool_anchor       with central: the anchor's training windows join the pooled data
    anchor_per_step   public anchor windows in every DP-SGD batch (client/privacy/public_mix)
    frozen    parts of the model (tok_emb, pos_emb, time_emb, blocks.0, ...) that keep the
              warm start's weights under DP (the public choice costs no privacy)
    model     overrides of the tiny model preset (d_model, n_layers, n_heads)
    init_seed torch seed of the initial weights (how much of a row is the draw of its start)
    server    the server's step on the sites' mean update: "fedavg" (add it), "fedavgm" (a
              momentum of 0.9 over the rounds' updates) or "fedadam" (Flower's FedAdam, the
              product's `strategy: fedadam`, at server_lr)
    lora      rank of low-rank adapters (Hu et al. 2021) on every block's linear layers: under
              DP only the adapters train (every other weight keeps the warm start), and each
              site's adapters are merged into its weights before its update is sent

The anchor is the MIMIC-IV demo (100 real patients, few of whose codes the synthetic sites
hold); `--public-patients N` replaces it with a public cohort drawn from the synthetic world
(`--public-sites`: its case mixes), a stand-in for a large public set such as the full
MIMIC-IV, to measure what public pretraining gives when the public set is large and shared.

Besides the sites' tuning loss, the anchor's tuning loss (also renormalised over the
anchor's own tokens) and the probe, `--zero-shot-rows N` scores zero-shot answers on a
seeded, balanced draw of at most N tuning rows per site and task.

    .venv/bin/python benchmarks/dp_recipe_sweep.py [--recipes base,big-batch] [--data-seed 0]

Prints a table and writes benchmarks/results/dp_recipe_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results" / "dp_recipe_sweep.json"
TASKS = ("mortality", "long_los")
EPSILON, DELTA, VOCAB_EPSILON = 8.0, 1e-5, 1.16  # the vocabulary release as charged in (b)


@dataclass(frozen=True)
class Recipe:
    name: str
    batch: int = 32
    steps: int = 40
    rounds: int = 4
    lr: float = 2e-3
    opt: str = "adamw"
    clip: float = 1.0
    train: str = "all"
    warm: int = 100
    warm_stop: bool = False
    anchor_per_round: int = 0  # public anchor steps after each aggregation (keeps it known)
    central: bool = False  # non-private pooled training of rounds x 3 x steps (arm a)
    float16: bool = False  # updates sent as float16 differences (local.update_compression)
    float16_download: bool = False  # the sites start from float16 weights (download_compression)
    death_weight: float = 1.0  # a MEDS_DEATH target counts this many times in an example's loss
    keep_death_row: bool = False  # the death token's rows keep the warm start (no DP noise)
    interpolate: tuple[float, ...] = ()  # also score warm + a * (final - warm) for each a
    noise_scale: float = 1.0  # 0: DP clipping without noise (a diagnostic, not private)
    epsilon: float = EPSILON  # per site, before its vocabulary release (above 8: a diagnostic)
    pool_anchor: bool = False  # central: train on the anchor's windows too
    anchor_per_step: int = 0  # public anchor windows in every DP-SGD batch (public_mix)
    frozen: tuple[str, ...] = ()  # parts that keep the warm start's weights under DP
    model: tuple[tuple[str, int], ...] = ()  # overrides of the tiny preset, e.g. d_model
    init_seed: int = 0  # torch seed of the initial weights
    tie: bool = False  # the output head shares the token embedding's weights
    stop_early: bool = False  # central: up to 3 x rounds x steps, kept at the best tuning loss
    # also score an exponential moving average of the global model over the rounds for each
    # decay (post-processing of the released updates: no privacy cost; the rounds still
    # start from the last global, so the row's own scores are unchanged)
    ema: tuple[float, ...] = ()
    score_rounds: bool = False  # also score the global model after each round
    lora: int = 0  # rank of DP-trained low-rank adapters on the blocks' linear layers (0: none)
    server: str = "fedavg"  # the server's step on the mean update: fedavg, fedavgm or fedadam
    server_lr: float = 0.01  # fedadam's eta (the product's strategy.server_lr default)


BASE = Recipe("base")  # fed_vs_central's defaults today
RECIPES = {r.name: r for r in [
    BASE,
    replace(BASE, name="central", central=True, warm=0),
    replace(BASE, name="no-warm", warm=0),
    replace(BASE, name="sgd", opt="sgd", lr=0.5),
    replace(BASE, name="no-emb", train="no-emb"),
    replace(BASE, name="big-batch", batch=256, steps=10, lr=2e-3),
    replace(BASE, name="big-batch-sgd", batch=256, steps=10, opt="sgd", lr=1.0),
    replace(BASE, name="big-batch-no-emb", batch=256, steps=10, train="no-emb"),
    # under DP noise AdamW steps ~lr per weight whatever the gradient: a larger batch
    # lowers the noise per step only if the learning rate rises with it
    replace(BASE, name="batch128-lr4x", batch=128, steps=20, lr=8e-3),
    replace(BASE, name="batch256-lr4x", batch=256, steps=10, lr=8e-3),
    replace(BASE, name="lr-half", lr=1e-3),
    replace(BASE, name="lr-4x", lr=8e-3),  # the learning rate alone, at today's batch
    replace(BASE, name="anchor-10", anchor_per_round=10),
    replace(BASE, name="batch128-lr4x-anchor-10", batch=128, steps=20, lr=8e-3,
            anchor_per_round=10),
    # the anchor's loss ends near ln(vocabulary): under noise AdamW moves the embedding
    # and output rows of tokens no site holds; freezing them keeps what the anchor taught
    replace(BASE, name="batch128-lr4x-no-emb", batch=128, steps=20, lr=8e-3, train="no-emb"),
    # the warm start cannot teach the rows of site tokens (the anchor lacks them): freeze
    # only the rows no site holds (in the federation: no released count reaches the
    # vocabulary's threshold, which is public after the release)
    replace(BASE, name="batch128-lr4x-site-rows", batch=128, steps=20, lr=8e-3,
            train="site-rows"),
    # the warm start at a constant rate lands 0.8 nats apart from one seed to the next and
    # overfits the anchor's 100 patients within ~100 steps: stop it on the anchor's tuning loss
    replace(BASE, name="batch128-lr4x-warm-es", batch=128, steps=20, lr=8e-3, warm=300,
            warm_stop=True),
    # what float16 updates (local.update_compression) cost the tuned recipe
    replace(BASE, name="batch128-lr4x-warm-es-f16", batch=128, steps=20, lr=8e-3, warm=300,
            warm_stop=True, float16=True),
    replace(BASE, name="batch128-lr4x-warm-es-f16-both", batch=128, steps=20, lr=8e-3, warm=300,
            warm_stop=True, float16=True, float16_download=True),
    # zero-shot mortality reads the death token's output row, which under DP learns from
    # ~2% of the windows through ~1% of their clipped gradient (outcome_row_signal.py):
    # the warm start alone, the death target weighted, the death row kept as the anchor left it
    replace(BASE, name="warm-es-only", warm=300, warm_stop=True, rounds=0),
    replace(BASE, name="init-only", warm=0, rounds=0),  # no training: what the probe gets for free
    replace(BASE, name="batch128-lr4x-warm-es-death50", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, death_weight=50.0),
    replace(BASE, name="batch128-lr4x-warm-es-death10", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, death_weight=10.0),
    replace(BASE, name="batch128-lr4x-warm-es-site-rows", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, train="site-rows"),
    # the anchor's own predictions degrade in the shared transformer under DP: the server
    # may step back towards the public warm start after the last round (post-processing)
    replace(BASE, name="batch128-lr4x-warm-es-interpolate", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, interpolate=(0.25, 0.5, 0.75)),
    replace(BASE, name="batch128-lr4x-warm-es-keep-death", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, keep_death_row=True),
    # is the anchor's rise the DP noise or the sites' data? The same rounds without noise,
    # central training from the same warm start, and central training that keeps the anchor
    replace(BASE, name="batch128-lr4x-warm-es-no-noise", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, noise_scale=0.0),
    replace(BASE, name="central-warm-es", central=True, warm=300, warm_stop=True),
    replace(BASE, name="central-warm-es-pool-anchor", central=True, warm=300, warm_stop=True,
            pool_anchor=True),
    # plain DP-SGD: the noise moves a weight by lr x noise, not by lr whatever the gradient
    replace(BASE, name="batch128-warm-es-sgd-lr1", batch=128, steps=20, opt="sgd", lr=1.0,
            warm=300, warm_stop=True),
    replace(BASE, name="batch128-warm-es-sgd-lr4", batch=128, steps=20, opt="sgd", lr=4.0,
            warm=300, warm_stop=True),
    # the anchor trained *with* the sites, as pooling does centrally: public anchor windows
    # in every DP-SGD batch, clipped and noised with the patients' (same privacy cost)
    replace(BASE, name="batch128-lr4x-warm-es-mix8", batch=128, steps=20, lr=8e-3, warm=300,
            warm_stop=True, anchor_per_step=8),
    replace(BASE, name="batch128-lr4x-warm-es-mix32", batch=128, steps=20, lr=8e-3, warm=300,
            warm_stop=True, anchor_per_step=32),
    replace(BASE, name="batch128-lr4x-warm-es-mix128", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, anchor_per_step=128),
    # is (b) undertrained? More DP steps at the same epsilon (the noise rises slower than
    # sqrt(steps) at these sample rates): 2x and 4x the rounds of 20 steps
    replace(BASE, name="batch128-lr4x-warm-es-mix32-rounds8", batch=128, steps=20, rounds=8,
            lr=8e-3, warm=300, warm_stop=True, anchor_per_step=32),
    replace(BASE, name="batch128-lr4x-warm-es-mix32-rounds16", batch=128, steps=20, rounds=16,
            lr=8e-3, warm=300, warm_stop=True, anchor_per_step=32),
    # is it the noise or the schedule? The same 320 clipped steps per site without noise
    # (not private): if this lifts the features off the untrained floor, the noise holds them
    replace(BASE, name="batch128-lr4x-warm-es-mix32-rounds16-no-noise", batch=128, steps=20,
            rounds=16, lr=8e-3, warm=300, warm_stop=True, anchor_per_step=32, noise_scale=0.0),
    # under DP a weight whose gradient is mostly noise walks about lr per step: averaging
    # the global model over the last rounds (De et al. 2022 average their DP-SGD iterates)
    # cancels the part of that walk that the loss pulls back, paired on one run
    replace(BASE, name="batch128-lr4x-warm-es-mix32-rounds16-ema", batch=128, steps=20,
            rounds=16, lr=8e-3, warm=300, warm_stop=True, anchor_per_step=32,
            ema=(0.5, 0.8, 0.9)),
    replace(BASE, name="batch128-lr4x-warm-es-mix32-ema", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, anchor_per_step=32, ema=(0.5, 0.8)),
    # is the 0.8 average (half of it round 1's global) better for averaging out noise, or
    # for being less trained? Each round's global scored on the same run
    replace(BASE, name="batch128-lr4x-warm-es-mix32-ema-rounds", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, anchor_per_step=32, ema=(0.8,), score_rounds=True),
    replace(BASE, name="batch128-lr4x-warm-es-mix32-no-noise", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, anchor_per_step=32, noise_scale=0.0),
    # without noise the 320 steps lift the features to the counts: how much privacy would
    # that take? The same steps at epsilon 64 per site (a diagnostic; the budget is 8)
    replace(BASE, name="batch128-lr4x-warm-es-mix32-rounds16-eps64", batch=128, steps=20,
            rounds=16, lr=8e-3, warm=300, warm_stop=True, anchor_per_step=32, epsilon=64.0),
    # at the warm start the time embedding's projection (960 weights, unscaled log-day
    # inputs) holds 65% of a patient's squared gradient norm and the token embedding 2%,
    # and every patient is clipped (median norm 10-12 against 1; dp_feature_damage.py):
    # the clip leaves the tokens little signal. Kept at the warm start, the time
    # embedding takes no share of it
    replace(BASE, name="batch128-lr4x-warm-es-mix32-rounds16-frozen-time", batch=128,
            steps=20, rounds=16, lr=8e-3, warm=300, warm_stop=True, anchor_per_step=32,
            frozen=("time_emb",)),
    # (b)'s features sit at the untrained floor: does a model with fewer parameters (the
    # same clipped signal against noise in fewer coordinates) rise above its own floor?
    replace(BASE, name="batch128-lr4x-warm-es-mix32-d48", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, anchor_per_step=32, model=(("d_model", 48),)),
    replace(BASE, name="init-only-d48", warm=0, rounds=0, model=(("d_model", 48),)),
    replace(BASE, name="central-d48", central=True, warm=0, model=(("d_model", 48),)),
    # how much of (a)'s AUROC is the draw of its initial weights? (fed_vs_central's (a) moved
    # 0.037 between two runs of one data seed whose DP vocabularies differ by one token)
    *[replace(BASE, name=f"central-init{k}", central=True, warm=0, init_seed=k)
      for k in range(1, 5)],
    # is zero-shot bounded by the training budget even without DP? (a)'s recipe, 4x the steps
    replace(BASE, name="central-steps4x", central=True, warm=0, steps=160),
    # arm (d) of fed_vs_central at the tuned recipe: what the anchor's warm start adds
    replace(BASE, name="batch128-lr4x-no-warm", batch=128, steps=20, lr=8e-3, warm=0),
    # arm (a) at the batch of the tuned recipe: which learning rate serves it best
    replace(BASE, name="central-b128", central=True, warm=0, batch=128, steps=20),
    replace(BASE, name="central-b128-lr4x", central=True, warm=0, batch=128, steps=20,
            lr=8e-3),
    # the output head tied to the token embedding: a token's one row then learns from every
    # softmax over the vocabulary as well as from its own inputs, and 212k fewer weights
    # take noise (Opacus adds the two roles' per-example gradients, checked exactly)
    replace(BASE, name="batch128-lr4x-warm-es-mix32-tied", batch=128, steps=20, lr=8e-3,
            warm=300, warm_stop=True, anchor_per_step=32, tie=True),
    replace(BASE, name="central-tied", central=True, warm=0, tie=True),
    # (a) trained to early stopping on its tuning split (issue 12's rule of a fair comparison):
    # up to 3x fed_vs_central's 1,920 steps, warm-up and cosine decay, the best weights kept
    replace(BASE, name="central-es", central=True, warm=0, steps=480, stop_early=True),
    # (a) reads about three quarters of the first-day lab values' signal beyond the counts
    # (benchmarks/beyond_counts.py): does a wider model read more of it?
    replace(BASE, name="central-es-d192", central=True, warm=0, steps=480, stop_early=True,
            model=(("d_model", 192),)),
    # public pretraining then private fine-tuning with a *large* public set (run with
    # --public-patients: a public cohort of the synthetic world stands in for the full
    # MIMIC-IV that DESIGN.md routes through the same anchor path): the public model alone,
    # then fvc's DP rounds on top at the tuned rate and at a rate that keeps the start
    replace(BASE, name="public-warm-only", warm=2400, warm_stop=True, rounds=0),
    replace(BASE, name="public-warm-mix32", batch=128, steps=20, lr=8e-3, warm=2400,
            warm_stop=True, anchor_per_step=32),
    replace(BASE, name="public-warm-mix32-lr1e-3", batch=128, steps=20, lr=1e-3, warm=2400,
            warm_stop=True, anchor_per_step=32),
    replace(BASE, name="public-warm-mix32-lr2e-4", batch=128, steps=20, lr=2e-4, warm=2400,
            warm_stop=True, anchor_per_step=32),
    # between the rate that keeps the start (1e-3) and the one that undoes it (8e-3): with a
    # public set of one case mix the rounds have more to learn (fed_vs_central's anchor)
    *(replace(BASE, name=f"public-warm-mix32-lr{lr:.0e}".replace("e-0", "e-"), batch=128,
              steps=20, lr=lr, warm=2400, warm_stop=True, anchor_per_step=32)
      for lr in (2e-3, 4e-3)),
    # private fine-tuning that changes few weights: only the top block, final norm and head
    # (the clipped gradient spread over fewer weights: does a larger rate then pay?)
    *(replace(BASE, name=f"public-warm-mix32-lr{lr:.0e}-top".replace("e-0", "e-"), batch=128,
              steps=20, lr=lr, warm=2400, warm_stop=True, anchor_per_step=32,
              frozen=("tok_emb", "pos_emb", "time_emb", "blocks.0"))
      for lr in (1e-3, 4e-3)),
    # private fine-tuning through low-rank adapters (issue 12's lever; Yu et al. 2022 fine-tune
    # language models under DP this way): rank 8 on the blocks' 8 linear layers is 24k trainable
    # weights against the model's 661k, so the noise added to the clipped gradient is 5x smaller
    # in norm (27x fewer coordinates)
    *(replace(BASE, name=f"public-warm-mix32-lr{lr:.0e}-lora8".replace("e-0", "e-"), batch=128,
              steps=20, lr=lr, warm=2400, warm_stop=True, anchor_per_step=32, lora=8)
      for lr in (2e-3, 8e-3)),
    # the server's optimizer on DP updates (issue 12's lever): a momentum over the rounds' mean
    # updates (the noise of different rounds cancels, a direction the sites share adds up), and
    # the product's FedAdam at its default rate, on the large-anchor recipe
    *(replace(BASE, name=f"public-warm-mix32-lr1e-3-{server}", batch=128, steps=20, lr=1e-3,
              warm=2400, warm_stop=True, anchor_per_step=32, server=server)
      for server in ("fedavgm", "fedadam")),
]}


def frozen_names(model) -> set[str]:
    """Token embedding and output head: most parameters, and mostly noise under DP."""
    return {n for n, p in model.named_parameters()
            if p.dim() == 2 and p.shape[0] == model.config.vocab_size}


def anchor_only_rows(world) -> list[int]:
    """Token ids that no training site's windows hold ([BOS], [EOS] and the other
    bracketed specials are added by the windows, so they always count as held)."""
    import numpy as np

    tokens = world["vocab"].tokens
    held = np.array([t.startswith("[") for t in tokens])
    for d in world["data"].values():
        held[np.unique(d.train.cache.tokens)] = True
    return np.flatnonzero(~held).tolist()


def keep_rows(rows: list[int], vocab_size: int):
    """An `after_noise` hook: zero the noised gradient of `rows` in every vocabulary-sized
    parameter, so AdamW (no weight decay) leaves them where the warm start put them."""
    def hook(grads) -> None:
        for g in grads:
            if g is not None and g.shape[0] == vocab_size:
                g[rows] = 0
    return hook


def lora_linear(base, rank: int):
    """`base` (frozen) plus a trainable change b(a(x)), b starting at zero so the model's
    output is unchanged until the adapters learn. Two plain nn.Linear: Opacus computes their
    per-example gradients with its own hooks."""
    from torch import nn

    class Adapted(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base
            self.a = nn.Linear(base.in_features, rank, bias=False)
            self.b = nn.Linear(rank, base.out_features, bias=False)
            nn.init.zeros_(self.b.weight)

        def forward(self, x):
            return self.base(x) + self.b(self.a(x))

    return Adapted()


LORA_LAYERS = ("attn.qkv", "attn.out", "mlp.fc", "mlp.proj")


def add_lora(model, rank: int) -> list:
    """Freeze every weight of `model` and put rank-`rank` adapters on the blocks' linear
    layers; returns (parent, attribute) of each, for `merge_lora`."""
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = []
    for block in model.blocks:
        for path in LORA_LAYERS:
            parent_name, attr = path.split(".")
            parent = getattr(block, parent_name)
            setattr(parent, attr, lora_linear(getattr(parent, attr), rank))
            adapted.append((parent, attr))
    return adapted


def merge_lora(adapted: list) -> None:
    """Fold each adapter into its base weight (W + B A) and put the plain layer back, so the
    site's update has the model's own keys."""
    import torch

    with torch.no_grad():
        for parent, attr in adapted:
            layer = getattr(parent, attr)
            layer.base.weight += layer.b.weight @ layer.a.weight
            setattr(parent, attr, layer.base)


def run_recipe(recipe: Recipe, world, args) -> dict:
    import copy

    import torch
    from fed_vs_central import CENTRAL_EVAL_EVERY

    from fedehr.client.privacy.dp_sgd import DPConfig
    from fedehr.shared.data.schema import DEATH_CODE
    from fedehr.shared.privacy.accounting import noise_multiplier_for
    from fedehr.shared.training import train, train_early_stopped

    torch.manual_seed(0)
    model = world["initial"](recipe.init_seed, **dict(recipe.model))
    if recipe.tie:
        model.lm_head.weight = model.tok_emb.weight
    t0 = time.perf_counter()
    warm_start(model, recipe, world)
    warm_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    early = {}
    if recipe.central:
        from torch.utils.data import ConcatDataset

        pooled = ConcatDataset([d.train for d in world["data"].values()]
                               + ([world["anchor_train"]] if recipe.pool_anchor else []))
        if recipe.stop_early:  # on the pooled sites' tuning windows, as fed_vs_central's (a)
            stopped = train_early_stopped(
                model, pooled, ConcatDataset([d.tuning for d in world["data"].values()]),
                max_steps=3 * recipe.rounds * recipe.steps, batch_size=recipe.batch,
                lr=recipe.lr, eval_every=CENTRAL_EVAL_EVERY, patience=2)
            early = {"best_step": stopped.best_step, "steps_run": stopped.steps}
        else:
            _train(model, pooled, recipe, steps=3 * recipe.rounds * recipe.steps, dp=None)
    else:
        frozen = (frozen_names(model) if recipe.train == "no-emb" else set()) | {
            n for n, _ in model.named_parameters()
            if any(n.startswith(part + ".") for part in recipe.frozen)}
        kept = (anchor_only_rows(world) if recipe.train == "site-rows" else []) + \
            ([world["vocab"].id(DEATH_CODE)] if recipe.keep_death_row else [])
        after_noise = keep_rows(kept, model.config.vocab_size) if kept else None
        if recipe.death_weight != 1.0:
            weight_death(model, world["vocab"].id(DEATH_CODE), recipe.death_weight)
        noises = {}
        for name, d in world["data"].items():
            q = min(recipe.batch, d.patients) / d.patients
            noises[name] = max(1e-9, recipe.noise_scale * noise_multiplier_for(  # Opacus: > 0
                recipe.epsilon - VOCAB_EPSILON, delta=DELTA, sample_rate=q,
                steps=recipe.rounds * recipe.steps))
        averages = {}  # decay -> the global model's moving average (recipe.ema)
        server_state = {}  # the server optimizer's moments (recipe.server)
        # round -> the scores of its global model, 0 the warm start (recipe.score_rounds)
        per_round = {"0": scores(model, world)} if recipe.score_rounds else {}
        for rnd in range(recipe.rounds):
            start = {k: v.detach().clone() for k, v in model.state_dict().items()}
            total = {k: torch.zeros_like(v) for k, v in start.items()}
            weight = 0
            site_start = {k: v.half().float() if v.is_floating_point() else v
                          for k, v in start.items()} if recipe.float16_download else start
            for name, d in world["data"].items():
                local = copy.deepcopy(model)
                local.load_state_dict(site_start)
                for n, p in local.named_parameters():
                    p.requires_grad_(n not in frozen)
                adapted = add_lora(local, recipe.lora) if recipe.lora else []
                dp = DPConfig(max_grad_norm=recipe.clip, noise_multiplier=noises[name],
                              delta=DELTA)
                _train(local, d.train, recipe, steps=recipe.steps, dp=dp,
                       batch=min(recipe.batch, d.patients), seed=1000 * rnd + len(name),
                       after_noise=after_noise, public=world["anchor_train"])
                merge_lora(adapted)
                update = local.state_dict()
                if recipe.float16:  # what the server rebuilds from the site's float16 reply:
                    # the site's change, added to the server's own (float32) weights
                    update = {k: v - site_start[k] + start[k] for k, v in
                              float16_round_trip(update, site_start).items()}
                for k, v in update.items():
                    total[k] += d.patients * (v - start[k])
                weight += d.patients
            model.load_state_dict(server_step(recipe, server_state, start,
                                              {k: total[k] / weight for k in start}, rnd))
            averages = {b: ema_step(averages.get(b), model.state_dict(), b) for b in recipe.ema}
            if recipe.score_rounds:
                per_round[str(rnd + 1)] = scores(model, world)
            if recipe.anchor_per_round:
                train(model, world["anchor_train"], steps=recipe.anchor_per_round,
                      batch_size=32, lr=2e-3, dp=None, seed=rnd + 1)
    if model.__dict__.pop("per_example_loss", None):  # evaluate with the plain loss,
        correct_death_logit(model, world["vocab"].id(DEATH_CODE), recipe.death_weight)
    seconds = time.perf_counter() - t0
    row = {"recipe": asdict(recipe), "seconds": round(seconds, 1), **scores(model, world),
           **early,
           "noise": None if recipe.central else {k: round(v, 3) for k, v in noises.items()}}
    if args.zero_shot_rows:
        row["auroc"]["zero_shot"] = zero_shot_aurocs(model, world, rows=args.zero_shot_rows,
                                                     samples=args.zero_shot_samples)
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if args.save_models:
        args.save_models.mkdir(parents=True, exist_ok=True)
        torch.save(final, args.save_models / f"{recipe.name}-seed{args.data_seed}.pt")
    if recipe.score_rounds:
        row["rounds"] = per_round
    for b in recipe.ema:
        model.load_state_dict(averages[b])
        row.setdefault("ema", {})[str(b)] = scores(model, world)
    for a in recipe.interpolate:
        model.load_state_dict({k: warm_state[k] + a * (v - warm_state[k])
                               if v.is_floating_point() else v for k, v in final.items()})
        row.setdefault("interpolated", {})[str(a)] = scores(model, world)
    return row


def server_step(recipe: Recipe, state: dict, start: dict, mean_update: dict, rnd: int) -> dict:
    """The next global model from the sites' weighted mean update. fedavgm: Hsu et al. 2019
    (server rate 1, momentum 0.9); fedadam: Reddi et al. 2021 as Flower 1.42 computes it
    (beta 0.9 / 0.99, tau 1e-3, its bias correction at round rnd + 1), moments in `state`."""
    if recipe.server == "fedavg":
        return {k: start[k] + mean_update[k] for k in start}
    if recipe.server == "fedavgm":
        for k, d in mean_update.items():
            state[k] = 0.9 * state[k] + d if k in state else d.clone()
        return {k: start[k] + state[k] for k in start}
    if recipe.server != "fedadam":
        raise ValueError(f"unknown server step {recipe.server!r}")
    t = rnd + 1  # Flower's server_round
    eta = recipe.server_lr * (1 - 0.99 ** (t + 1)) ** 0.5 / (1 - 0.9 ** (t + 1))
    m, v = state.setdefault("m", {}), state.setdefault("v", {})
    for k, d in mean_update.items():
        m[k] = 0.9 * m.get(k, 0) + 0.1 * d
        v[k] = 0.99 * v.get(k, 0) + 0.01 * d * d
    return {k: start[k] + eta * m[k] / (v[k].sqrt() + 1e-3) for k in start}


def ema_step(average: dict | None, state: dict, decay: float) -> dict:
    """decay x average + (1 - decay) x state; the state itself when there is no average yet."""
    if average is None:
        return {k: v.detach().clone() for k, v in state.items()}
    return {k: decay * average[k] + (1 - decay) * v for k, v in state.items()}


def warm_start(model, recipe: Recipe, world) -> None:
    """`recipe.warm` non-private steps on the public anchor (early-stopped with warm_stop)."""
    from fedehr.shared.training import train, train_early_stopped

    if recipe.warm and recipe.warm_stop:
        key = (recipe.warm, recipe.model, recipe.init_seed, recipe.tie)
        if key not in world["warm_cache"]:  # recipes of one run that share a warm start
            train_early_stopped(model, world["anchor_train"], world["anchor_tuning"],
                                max_steps=recipe.warm, batch_size=32, lr=2e-3,
                                eval_every=world["warm_eval_every"])
            world["warm_cache"][key] = {k: v.detach().clone()
                                        for k, v in model.state_dict().items()}
        model.load_state_dict(world["warm_cache"][key])
    elif recipe.warm:
        train(model, world["anchor_train"], steps=recipe.warm, batch_size=32, lr=2e-3, dp=None,
              seed=0)


def scores(model, world) -> dict:
    """Tuning losses of the sites and the anchor, and the probe's and counts' AUROC."""
    from fedehr.shared.training import evaluate as eval_loss

    losses = {name: round(eval_loss(model, d.tuning, batch_size=64)[0], 4)
              for name, d in world["data"].items()}
    return {"tuning_loss": losses,
            "mean_tuning_loss": round(sum(losses.values()) / len(losses), 4),
            "anchor_tuning_loss": round(eval_loss(model, world["anchor_tuning"],
                                                  batch_size=32)[0], 4),
            "anchor_own_tokens_loss": anchor_own_loss(model, world),
            "auroc": probe_aurocs(model, world)}


def weight_death(model, death: int, weight: float) -> None:
    """Count each death target `weight` times in the example's mean next-token loss (the
    clipped gradient then gives the death row more of its norm; the privacy cost is the
    same). Bound to this model, so a deep copy of it keeps the weighting."""
    import types

    from fedehr.shared.model.transformer import token_losses
    from fedehr.shared.tokenizer.batch import PAD_ID, Batch

    def per_example_loss(self, batch, negatives=None, generator=None):
        batch = Batch(*batch)
        logits = self.lm_head(self(*batch)[:, :-1])
        targets = batch.tokens[:, 1:]
        ce = token_losses(logits, targets)
        w = (targets != PAD_ID).to(ce.dtype) + (weight - 1.0) * (targets == death).to(ce.dtype)
        return (ce * w).sum(1) / w.sum(1).clamp(min=1)

    model.per_example_loss = types.MethodType(per_example_loss, model)


def anchor_own_loss(model, world) -> float:
    """The anchor's tuning loss with each prediction renormalised over the tokens the anchor's
    windows hold (2,087 of 2,208 no site holds): the part of the anchor's rise that is not
    mass moved to the sites' tokens."""
    import types

    import numpy as np
    import torch

    from fedehr.shared.model.transformer import token_losses
    from fedehr.shared.tokenizer.batch import PAD_ID, Batch
    from fedehr.shared.training import evaluate as eval_loss

    held = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    for windows in (world["anchor_train"], world["anchor_tuning"]):
        for part in getattr(windows, "datasets", [windows]):  # a public cohort: several sites
            held[torch.from_numpy(np.unique(part.cache.tokens))] = True

    def per_example_loss(self, batch, negatives=None, generator=None):
        batch = Batch(*batch)
        logits = self.lm_head(self(*batch)[:, :-1]).masked_fill(~held, float("-inf"))
        targets = batch.tokens[:, 1:]
        ce = token_losses(logits, targets, ignore_index=PAD_ID)
        counted = (targets != PAD_ID).to(ce.dtype)
        return (ce * counted).sum(1) / counted.sum(1).clamp(min=1)

    model.per_example_loss = types.MethodType(per_example_loss, model)
    try:
        return round(eval_loss(model, world["anchor_tuning"], batch_size=32)[0], 4)
    finally:
        del model.per_example_loss


def correct_death_logit(model, death: int, weight: float) -> None:
    """Undo the weighting where the model predicts: a weighted loss's optimum puts the
    death logit log(weight) too high, so generation reads it log(weight) lower."""
    import math
    import types

    def logits(self, hidden):
        out = self.lm_head(hidden)
        out[..., death] -= math.log(weight)
        return out

    model.logits = types.MethodType(logits, model)


def zero_shot_aurocs(model, world, *, rows: int, samples: int) -> dict:
    """Zero-shot AUROC (the default "expected" estimator) per site and task on a seeded,
    balanced draw of at most `rows` labelled rows of the site's *tuning* split; the same
    rows for every recipe of a data seed."""
    import numpy as np
    import polars as pl
    from sklearn.metrics import roc_auc_score

    from fedehr.shared.clinical import labels as L
    from fedehr.shared.clinical import zero_shot
    from fedehr.shared.clinical.evaluate import subject_split
    from fedehr.shared.clinical.query import outcome_from_task
    from fedehr.shared.data import schema as S

    out = {}
    tasks = [L.load_task(t) for t in TASKS]
    for name, (dataset, mapping) in world["eval"].items():
        pred_path = L.predicates_path(None, dataset)
        labels = L.extract_many(dataset, tasks, pred_path)
        subjects = np.concatenate([lab[L.SUBJECT_ID].to_numpy() for lab in labels])
        _, tuning, _ = subject_split(dataset, subjects, test_split=S.TUNING)
        for task, lab in zip(tasks, labels, strict=True):
            lab = lab.filter(pl.col(L.SUBJECT_ID).is_in(list(tuning)))
            y = lab[L.BOOLEAN_VALUE].to_numpy().astype(bool)
            picked = balanced_rows(y, rows)
            outcome = outcome_from_task(task.config, predicates=L.dataset_predicates(pred_path))
            frame = zero_shot.predict_detailed(model, world["vocab"], dataset,
                                               lab[picked.tolist()], outcome, samples=samples,
                                               seed=0, batch_size=256, mapping=mapping).frame
            prob = frame["probability"].cast(pl.Float64).to_numpy()
            if task.label_negated:
                prob = 1.0 - prob
            answered = ~np.isnan(prob)
            out[f"{name}/{task.name}"] = round(float(roc_auc_score(y[picked][answered],
                                                                   prob[answered])), 4)
    for task in TASKS:
        cells = [v for k, v in out.items() if k.endswith("/" + task)]
        out[f"mean/{task}"] = round(sum(cells) / len(cells), 4)
    return out


def balanced_rows(y, rows: int):
    """Indices of a seeded draw of at most `rows` of the labels `y`, half of them positive
    where there are enough (the same rows for every model of a data seed)."""
    import numpy as np

    rng = np.random.default_rng([0, len(y)])
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n_pos = min(len(pos), rows // 2)
    return np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False),
                                   rng.choice(neg, min(len(neg), rows - n_pos),
                                              replace=False)]))


def float16_round_trip(trained: dict, start: dict) -> dict:
    """The weights the server rebuilds from a site's float16 reply (local.update_compression)."""
    import numpy as np
    import torch
    from flwr.app import Array, ArrayRecord

    from fedehr.shared.update_compression import decode, encode

    sent = ArrayRecord({k: Array(v.numpy()) for k, v in encode(trained, start).items()})
    rebuilt = decode(sent, {k: v.numpy() for k, v in start.items()})
    return {k: torch.from_numpy(np.asarray(a.numpy())) for k, a in rebuilt.items()}


def _train(model, dataset, recipe: Recipe, *, steps: int, dp, batch: int | None = None,
           seed: int = 0, after_noise=None, public=None):
    import torch

    from fedehr.client.privacy.dp_sgd import train_dp
    from fedehr.shared.training import train

    opt = torch.optim.AdamW
    if recipe.opt == "sgd":  # the trainer builds AdamW(params, lr=, weight_decay=)
        torch.optim.AdamW = lambda params, lr, weight_decay: torch.optim.SGD(
            params, lr=lr, momentum=0.9)
    try:
        mix = {"public": public, "public_per_step": recipe.anchor_per_step} \
            if recipe.anchor_per_step else {}
        run = train if dp is None else partial(train_dp, dp=dp, after_noise=after_noise, **mix)
        return run(model, dataset, steps=steps, batch_size=batch or recipe.batch, lr=recipe.lr,
                   seed=seed)
    finally:
        torch.optim.AdamW = opt


def probe_aurocs(model, world) -> dict:
    """k=all probe AUROC per site and task on the tuning rows, on the last position's vector
    ("probe") and on that and the mean over the history's positions ("probe_last_mean")."""
    from fedehr.shared.clinical.evaluate import evaluate
    from fedehr.shared.data import schema as S

    out = {}
    for name, (dataset, mapping) in world["eval"].items():
        for pooling, key in (("last", "probe"), ("last+mean", "probe_last_mean")):
            result = evaluate((model, world["vocab"]), dataset, tasks=TASKS, ks=("all",),
                              seeds=1, mapping=mapping, test_split=S.TUNING, batch_size=64,
                              pooling=pooling)
            for t in result.tasks:
                for m in t.methods:
                    label = "counts" if m.label == "counts k=all" else \
                        key if m.label == "probe k=all" else None
                    if label:
                        out.setdefault(label, {})[f"{name}/{t.task}"] = \
                            round(float(m.mean("auroc")), 4)
    for key, cells in out.items():
        out[key] = {**cells, "mean": round(sum(cells.values()) / len(cells), 4)}
    return out


def build_world(workdir: Path, args) -> dict:
    import polars as pl
    from fed_vs_central import Hospital, initial_model, site_config, site_windows, warm_eval_every
    from torch.utils.data import ConcatDataset

    from fedehr.client.site_data import site_mapping
    from fedehr.shared.anchor import Anchor
    from fedehr.shared.data import schema as S
    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.data.synth import synthesize
    from fedehr.shared.model import ModelConfig
    from fedehr.shared.tokenizer.merge import vocabulary_from_public

    summaries = synthesize(workdir / "hospitals", sites=4, patients=args.patients,
                           seed=args.data_seed, overwrite=True)
    hospitals = [Hospital(s.name, Path(s.path), s.harmonisation) for s in summaries
                 if s.name != args.left_out]
    public = public_cohort(workdir, args)
    anchor = None if public else Anchor.load(None, workdir / "anchor-cache")
    events = [anchor.train_events] if anchor else []
    mappings = {}
    for h in public:
        dataset = MEDSDataset.open(h.path)
        mapping = site_mapping(site_config(h, workdir / "public-state" / h.name), dataset)
        events.append(mapping.apply(dataset.scan(S.TRAIN).collect()))
    for h in hospitals:
        dataset = MEDSDataset.open(h.path)
        mappings[h.name] = (dataset, site_mapping(site_config(h, workdir / h.name), dataset))
        events.append(mappings[h.name][1].apply(dataset.scan(S.TRAIN).collect()))
    vocab = vocabulary_from_public(pl.concat(events, how="diagonal_relaxed"), min_count=5)
    if args.value_tokens:
        vocab = vocab.with_value_tokens()
    config = ModelConfig.preset("tiny", len(vocab.tokens), max_len=args.max_len, note_dim=0,
                                image_dim=0, pro_dim=0)

    data = {h.name: site_windows(h, workdir / "state", vocab, config) for h in hospitals}
    if public:  # the public cohort's train and tuning windows, pooled over its sites
        parts = [site_windows(h, workdir / "public-state", vocab, config) for h in public]
        anchor_train = ConcatDataset([d.train for d in parts])
        anchor_tuning = ConcatDataset([d.tuning for d in parts])
    else:
        anchor_train, anchor_tuning = (anchor.windows(vocab, split, max_len=config.max_len,
                                                      note_dim=0, image_dim=0)
                                       for split in (S.TRAIN, S.TUNING))
    return {"vocab": vocab, "data": data, "eval": mappings,
            "initial": lambda seed, **model: initial_model(replace(config, **model),
                                                           vocab.tokens, seed),
            "anchor_train": anchor_train, "anchor_tuning": anchor_tuning,
            "warm_eval_every": warm_eval_every(args.public_patients), "warm_cache": {}}


def public_cohort(workdir: Path, args) -> list:
    """With --public-patients N, a public cohort drawn from the same synthetic world (its
    own seed, --public-sites archetypes, the left-out one dropped) replaces the MIMIC-IV
    demo as the anchor: a stand-in for a large public set (the full MIMIC-IV) whose codes
    the sites share after harmonisation. An optimistic stand-in: it shares the sites'
    generative model, which no real public set does."""
    from fed_vs_central import PUBLIC_SEED, Hospital

    from fedehr.shared.data.synth import synthesize

    if not args.public_patients:
        return []
    summaries = synthesize(workdir / "public", sites=args.public_sites,
                           patients=args.public_patients, seed=args.data_seed + PUBLIC_SEED,
                           overwrite=True)
    return [Hospital(s.name, Path(s.path), s.harmonisation) for s in summaries
            if s.name != args.left_out]


def world_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `build_world` reads: the synthetic world's draw and the model's context."""
    parser.add_argument("--patients", type=int, default=6000)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--left-out", default="hospital_c")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--public-patients", type=int, default=0,
                        help="draw a public cohort of this many patients from the synthetic "
                        "world (other seed, the left-out archetype dropped) and use it as the "
                        "anchor instead of the MIMIC-IV demo (0: the demo)")
    parser.add_argument("--public-sites", type=int, default=4,
                        help="hospitals the public cohort is drawn as (the world's 4 minus the "
                        "left-out one; 1: the teaching hospital's case mix alone, a public set "
                        "that differs from the sites)")
    parser.add_argument("--value-tokens", action="store_true",
                        help="write each lab value as one joint code-and-bin token "
                        "(Vocabulary.with_value_tokens) instead of a code and a Q token")


def zero_shot_words(row: dict) -> str:
    zs = row["auroc"].get("zero_shot")
    return "" if not zs else "  zero-shot " + " ".join(
        f"{t} {zs[f'mean/{t}']:.3f}" for t in TASKS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"comma-separated, of: {', '.join(RECIPES)}")
    world_arguments(parser)
    parser.add_argument("--zero-shot-rows", type=int, default=0,
                        help="also score zero-shot on this many tuning rows per site and task "
                        "(0: not)")
    parser.add_argument("--zero-shot-samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--save-models", type=Path, metavar="DIR",
                        help="also save each recipe's final weights here, to score other "
                        "read-outs later without training again")
    args = parser.parse_args(argv)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedehr-dp-sweep-") as tmp:
        t0 = time.perf_counter()
        world = build_world(Path(tmp), args)
        print(f"world ready in {time.perf_counter() - t0:.0f}s: "
              + ", ".join(f"{k} {d.patients}" for k, d in world["data"].items()), flush=True)
        for name in names:
            row = run_recipe(RECIPES[name], world, args)
            rows.append(row)
            print(f"{name:<18} loss {row['mean_tuning_loss']:.3f}  anchor "
                  f"{row['anchor_tuning_loss']:.3f} (own tokens "
                  f"{row['anchor_own_tokens_loss']:.3f})  probe {row['auroc']['probe']['mean']:.3f}"
                  f" (last+mean {row['auroc']['probe_last_mean']['mean']:.3f})"
                  f"  counts {row['auroc']['counts']['mean']:.3f}  {row['seconds']:.0f}s  "
                  f"noise {row['noise']}" + zero_shot_words(row)
                  + (f"  best step {row['best_step']} of {row['steps_run']}"
                     if "best_step" in row else ""), flush=True)
            extra = {f"warm + {a} x (final - warm)": r
                     for a, r in row.get("interpolated", {}).items()}
            extra.update({f"moving average, decay {b}": r for b, r in row.get("ema", {}).items()})
            extra.update({f"global after round {n}": r for n, r in row.get("rounds", {}).items()})
            for label, r in extra.items():
                print(f"  {label}: loss {r['mean_tuning_loss']:.3f}  anchor "
                      f"{r['anchor_tuning_loss']:.3f} (own tokens "
                      f"{r['anchor_own_tokens_loss']:.3f})  probe "
                      f"{r['auroc']['probe']['mean']:.3f} (last+mean "
                      f"{r['auroc']['probe_last_mean']['mean']:.3f})", flush=True)
    print("\n| recipe | tuning loss | anchor loss | probe AUROC (mean) | "
          + " | ".join(k for k in rows[0]["auroc"]["probe"] if k != "mean") + " |")
    for r in rows:
        cells = [v for k, v in r["auroc"]["probe"].items() if k != "mean"]
        print(f"| {r['recipe']['name']} | {r['mean_tuning_loss']:.3f} | "
              f"{r['anchor_tuning_loss']:.3f} | {r['auroc']['probe']['mean']:.3f} | "
              + " | ".join(f"{c:.3f}" for c in cells) + " |" + zero_shot_words(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "dp_recipe_sweep", "data_seeds": [args.data_seed],
              "config": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
