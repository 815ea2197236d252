"""The plain training loop (public data): learns, evaluates, refuses private-data options.

DP-SGD's tests live with it: tests/client/privacy/test_dp_sgd.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fedehr.shared.errors import ConfigError
from fedehr.shared.training import evaluate, train, train_early_stopped

sys.path.insert(0, str(Path(__file__).parent))
from standin import TinyLM, token_dataset  # noqa: E402


def test_non_dp_training_learns_and_spends_nothing():
    model, data = TinyLM(), token_dataset(64)
    start, _ = evaluate(model, data, 32)
    result = train(model, data, steps=60, batch_size=16, lr=1e-2, dp=None, seed=0)
    end, perplexity = evaluate(model, data, 32)
    assert result.epsilon_spent == 0.0 and result.noise_multiplier is None
    assert end < start and perplexity == pytest.approx(torch.tensor(end).exp().item())


@pytest.mark.parametrize("option", [{"dp": object()}, {"ledger": object()}])
def test_the_plain_trainer_refuses_private_training_and_names_the_dp_entry_point(option):
    with pytest.raises(ConfigError, match="private data") as caught:
        train(TinyLM(), token_dataset(8), steps=1, batch_size=4, lr=1e-2, **option)
    assert "train_dp" in caught.value.fix


def test_evaluate_runs_without_gradients_and_restores_the_mode():
    model = TinyLM().train()
    loss, perplexity = evaluate(model, token_dataset(16), 8)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert perplexity == pytest.approx(torch.tensor(loss).exp().item())


def _distance(model: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
    return sum(float((p - start[n]).pow(2).sum()) for n, p in model.named_parameters()) ** 0.5


def test_proximal_term_keeps_weights_closer_to_the_start():
    distances = []
    for mu in (0.0, 5.0):
        torch.manual_seed(0)
        model, data = TinyLM(), token_dataset(64)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        train(model, data, steps=30, batch_size=16, lr=1e-2, seed=0, proximal_mu=mu)
        distances.append(_distance(model, start))
    assert distances[1] < 0.7 * distances[0]


def _reversed(data) -> torch.utils.data.TensorDataset:
    """The same windows read backwards: what the training set teaches is wrong here."""
    tokens, *rest = data.tensors
    return torch.utils.data.TensorDataset(tokens.flip(1), *rest)


def test_early_stopping_trains_while_the_tuning_loss_falls():
    model, data = TinyLM(), token_dataset(64)
    start, _ = evaluate(model, token_dataset(32, seed=1), 32)
    result = train_early_stopped(model, data, token_dataset(32, seed=1), max_steps=100,
                                 batch_size=16, lr=1e-2, eval_every=10)
    assert result.best_step > 10 and result.tuning_loss < start - 0.5
    assert evaluate(model, token_dataset(32, seed=1), 32)[0] == pytest.approx(result.tuning_loss)


def test_early_stopping_stops_when_the_tuning_loss_rises_and_keeps_the_best_weights():
    model, data = TinyLM(), token_dataset(64)
    tuning = _reversed(token_dataset(32, seed=1))
    result = train_early_stopped(model, data, tuning, max_steps=200, batch_size=16, lr=1e-2,
                                 eval_every=10, patience=2)
    assert result.steps < 200 and result.steps == result.best_step + 20
    assert evaluate(model, tuning, 32)[0] == pytest.approx(result.tuning_loss)
