"""DP-SGD in several processes at one site: one Poisson sample, noise once, one charge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from fedehr.client.privacy import PrivacyLedger
from fedehr.client.privacy.distributed import ShardPoissonSampler
from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
from fedehr.shared.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parents[1] / "shared" / "training"))
from standin import TinyLM, token_dataset  # noqa: E402

NOISE, CLIP, BATCH, PATIENTS = 2.0, 1.0, 16, 64


def _train(tmp_path: Path, processes: int, *, zero_gradients: bool = False) -> dict:
    """Four DP steps on the stand-in model; the std of each step's noised gradient."""
    torch.manual_seed(0)
    model = TinyLM(d=32)
    params = list(model.parameters())
    stds = tmp_path / f"stds-{processes}.jsonl"  # written by the process that noises

    def zero() -> None:  # every process: clipped gradients of 0, the update is pure noise
        for p in params:
            p.summed_grad.zero_()

    def record(grads: list[torch.Tensor]) -> None:
        with stds.open("a") as f:
            f.write(json.dumps(float(torch.cat([g.flatten() for g in grads]).std())) + "\n")

    ledger = PrivacyLedger.open(tmp_path / f"ledger-{processes}.json", epsilon_budget=8.0,
                                delta=1e-5)
    result = train_dp(model, token_dataset(PATIENTS), steps=4, batch_size=BATCH, lr=1e-2,
                      ledger=ledger, dp=DPConfig(max_grad_norm=CLIP, noise_multiplier=NOISE),
                      seed=7, processes=processes, num_threads=2, round_id="r1",
                      before_noise=zero if zero_gradients else None, after_noise=record)
    return {"result": result, "ledger": ledger, "model": model,
            "stds": [json.loads(line) for line in stds.read_text().split()]}


def test_two_processes_charge_the_ledger_like_one(tmp_path):
    one, two = _train(tmp_path, 1), _train(tmp_path, 2)
    assert two["ledger"].history == one["ledger"].history == [(NOISE, BATCH / PATIENTS, 4)]
    assert two["ledger"].spent() == pytest.approx(one["ledger"].spent(), rel=1e-12)
    assert two["result"].steps == 4 and two["result"].examples > 0
    assert any(not torch.equal(v, TinyLM(d=32).state_dict()[k])
               for k, v in two["model"].state_dict().items())


def test_two_processes_add_the_noise_once_at_the_one_process_scale(tmp_path):
    one = _train(tmp_path, 1, zero_gradients=True)
    two = _train(tmp_path, 2, zero_gradients=True)
    expected = NOISE * CLIP / BATCH  # std of the noised mean gradient, q * n = BATCH
    # ~1,000 coordinates per step: a std estimate within a few percent; noise added by
    # both processes would be sqrt(2) too large, a per-process scale 2x
    for std in one["stds"] + two["stds"]:
        assert std == pytest.approx(expected, rel=0.08)
    assert two["stds"] == pytest.approx(one["stds"], rel=1e-5)  # process 0 draws the same noise


def test_shards_make_one_poisson_sample_of_all_patients():
    patients, rate, steps = 10, 0.3, 4000
    samplers = [ShardPoissonSampler(patients, rate, rank, 2, steps,
                                    torch.Generator().manual_seed(rank)) for rank in (0, 1)]
    counts = torch.zeros(patients)
    for batches in zip(*samplers, strict=True):
        taken = [i for batch in batches for i in batch]
        assert len(taken) == len(set(taken))  # each patient at most once per step
        counts[taken] += 1
    assert len(list(samplers[0])) == steps  # empty local batches are still steps
    assert torch.allclose(counts / steps, torch.full((patients,), rate), atol=0.03)


def test_processes_on_a_gpu_are_refused_before_training(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "ledger.json", epsilon_budget=8.0, delta=1e-5)
    with pytest.raises(ConfigError, match="CPU processes only"):
        train_dp(TinyLM(), token_dataset(PATIENTS), steps=2, batch_size=BATCH, lr=1e-2,
                 ledger=ledger, dp=DPConfig(max_grad_norm=CLIP, noise_multiplier=NOISE),
                 processes=2, device="meta")
    assert ledger.history == []
