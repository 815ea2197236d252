"""DP-SGD at a site: Opacus, keyed 256-bit noise, and the site's ledger as the accountant."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedehr.client.privacy import BudgetExceededError, PrivacyLedger
from fedehr.client.privacy.dp_sgd import DPConfig, train_dp
from fedehr.shared.errors import ConfigError
from fedehr.shared.training import train

sys.path.insert(0, str(Path(__file__).parents[2] / "shared" / "training"))
from standin import TinyLM, token_dataset  # noqa: E402

DELTA = 1e-5


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model):
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture
def ledger(tmp_path):
    return PrivacyLedger.open(tmp_path / "ledger.json", epsilon_budget=8.0, delta=DELTA)


def test_dp_training_changes_weights_and_spends_epsilon_as_opacus_accounts(ledger):
    torch.manual_seed(0)
    model, data = TinyLM(), token_dataset(64)
    before = snapshot(model)
    result = train_dp(model, data, steps=20, batch_size=16, lr=1e-2, ledger=ledger,
                      dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.5), round_id="r1")
    assert changed(before, model)
    opacus = RDPAccountant()
    opacus.history = [(1.5, 16 / 64, 20)]
    assert result.steps == 20
    assert result.epsilon_spent == pytest.approx(opacus.get_epsilon(delta=DELTA), rel=1e-9)
    assert ledger.spent() == pytest.approx(result.epsilon_spent)


def _trained_with(seed: int, ledger_dir: Path) -> dict[str, torch.Tensor]:
    """One full-batch step (sampling is then not random): the update is the noise's."""
    torch.manual_seed(0)
    model = TinyLM()
    ledger = PrivacyLedger.open(ledger_dir / f"{seed}.json", epsilon_budget=8.0, delta=DELTA)
    train_dp(model, token_dataset(16), steps=1, batch_size=16, lr=1e-2, ledger=ledger,
             dp=DPConfig(max_grad_norm=1.0, noise_multiplier=2.0), seed=seed)
    return snapshot(model)


def test_seeds_equal_in_their_low_64_bits_give_different_noise(tmp_path):
    seed = 0x5EED_1234_ABCD
    same = _trained_with(seed, tmp_path / "a")
    again = _trained_with(seed, tmp_path / "b")
    assert all(torch.equal(same[k], again[k]) for k in same)  # a key is reproducible
    for other in (seed + 2**32, seed + 2**64, seed + 7 * 2**200):  # a 32-bit MT: all equal
        weights = _trained_with(other, tmp_path / "c")
        assert any(not torch.equal(same[k], weights[k]) for k in same), hex(other)


def test_target_epsilon_gives_opacus_noise_and_lands_on_the_target(ledger):
    torch.manual_seed(0)
    result = train_dp(TinyLM(), token_dataset(64), steps=20, batch_size=16, lr=1e-2,
                      ledger=ledger, dp=DPConfig(max_grad_norm=1.0, target_epsilon=6.0))
    theirs = get_noise_multiplier(target_epsilon=6.0, target_delta=DELTA, sample_rate=0.25,
                                  steps=20, accountant="rdp")
    assert result.noise_multiplier == pytest.approx(theirs, rel=0.02)
    assert 5.9 <= result.epsilon_spent <= 6.0


def test_epsilon_accumulates_over_rounds_on_one_ledger(ledger):
    model, data = TinyLM(), token_dataset(64)
    dp = DPConfig(max_grad_norm=1.0, noise_multiplier=2.0)
    one = train_dp(model, data, steps=10, batch_size=16, lr=1e-2, dp=dp, ledger=ledger,
                   round_id="r1", seed=1)
    two = train_dp(model, data, steps=10, batch_size=16, lr=1e-2, dp=dp, ledger=ledger,
                   round_id="r2", seed=2)
    opacus = RDPAccountant()
    opacus.history = [(2.0, 0.25, 20)]
    assert two.epsilon_spent > one.epsilon_spent
    assert two.epsilon_run == pytest.approx(one.epsilon_run)
    assert two.epsilon_spent == pytest.approx(opacus.get_epsilon(delta=DELTA), rel=1e-9)


def test_budget_exceeded_refuses_and_trains_nothing(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "ledger.json", epsilon_budget=1.0, delta=DELTA)
    model = TinyLM()
    before = snapshot(model)
    with pytest.raises(BudgetExceededError, match="budget"):
        train_dp(model, token_dataset(64), steps=200, batch_size=16, lr=1e-2, ledger=ledger,
                 dp=DPConfig(max_grad_norm=1.0, noise_multiplier=0.7))
    assert not changed(before, model)
    assert ledger.entries == ()
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_an_already_charged_round_is_not_trained_again(ledger):
    model, data = TinyLM(), token_dataset(64)
    dp = DPConfig(max_grad_norm=1.0, noise_multiplier=2.0)
    train_dp(model, data, steps=5, batch_size=16, lr=1e-2, dp=dp, ledger=ledger, round_id="r1")
    before = snapshot(model)
    with pytest.raises(ConfigError, match="already trained"):
        train_dp(model, data, steps=5, batch_size=16, lr=1e-2, dp=dp, ledger=ledger,
                 round_id="r1")
    assert not changed(before, model) and len(ledger.entries) == 1


def test_empty_poisson_batches_survive_and_count_as_steps(ledger):
    model = TinyLM()
    before = snapshot(model)
    result = train_dp(model, token_dataset(64), steps=40, batch_size=1, lr=1e-2,
                      ledger=ledger, dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.0))
    assert result.empty_steps > 0  # with q = 1/64 over 40 steps, most batches are empty
    assert result.steps == 40 and ledger.entries[-1].steps == 40
    assert changed(before, model)  # noise-only steps still move the weights
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_ghost_clipping_trains_and_accounts_like_hooks(tmp_path):
    results = {}
    for mode in ("hooks", "ghost"):
        ledger = PrivacyLedger.open(tmp_path / f"{mode}.json", epsilon_budget=8.0, delta=DELTA)
        torch.manual_seed(0)
        model = TinyLM()
        before = snapshot(model)
        results[mode] = train_dp(model, token_dataset(64), steps=10, batch_size=16, lr=1e-2,
                                 ledger=ledger, dp=DPConfig(
                                     max_grad_norm=1.0, noise_multiplier=2.0,
                                     grad_sample_mode=mode))
        assert changed(before, model)
    assert results["ghost"].epsilon_spent == pytest.approx(results["hooks"].epsilon_spent)


def test_dp_training_leaves_a_plain_module_to_exchange(ledger):
    model = TinyLM()
    keys = list(model.state_dict())
    train_dp(model, token_dataset(32), steps=3, batch_size=8, lr=1e-2, ledger=ledger,
             dp=DPConfig(max_grad_norm=1.0, noise_multiplier=2.0))
    assert list(model.state_dict()) == keys  # no "_module." prefix
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    plain = train(model, token_dataset(32), steps=2, batch_size=8, lr=1e-2, dp=None)
    assert plain.steps == 2  # hooks are gone: an ordinary step works afterwards


def test_dp_without_a_ledger_needs_an_explicit_delta():
    with pytest.raises(ConfigError, match="delta"):
        train_dp(TinyLM(), token_dataset(16), steps=1, batch_size=4, lr=1e-2,
                 dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.0))


def test_proximal_term_keeps_dp_weights_closer_to_the_start():
    distances = []
    for mu in (0.0, 5.0):
        torch.manual_seed(0)
        model, data = TinyLM(), token_dataset(64)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        train_dp(model, data, steps=30, batch_size=16, lr=1e-2, seed=0, proximal_mu=mu,
                 dp=DPConfig(max_grad_norm=1.0, noise_multiplier=1.0, delta=DELTA))
        distances.append(sum(float((p.detach() - start[n]).pow(2).sum())
                             for n, p in model.named_parameters()) ** 0.5)
    assert distances[1] < 0.7 * distances[0]
