"""The model is Opacus-ready: per-example gradients under hooks and ghost clipping
match a naive loop over single examples, for every parameter."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.validators import ModuleValidator

from fedehr.shared.model import EHRModel
from fedehr.shared.tokenizer.batch import Batch

# Opacus' full backward hooks on the first layers see inputs that need no gradient.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

LENGTHS = [7, 5, 2]  # padding in two rows; the last row also has no PROs


def naive_per_example_grads(model, batch, negatives):
    """{name: [B, *shape]} by one backward per example."""
    grads = {name: [] for name, _ in model.named_parameters()}
    for i in range(batch.tokens.shape[0]):
        one = Batch(*(t[i:i + 1] for t in batch))
        model.zero_grad()
        model.per_example_loss(one, negatives=negatives[i:i + 1]).sum().backward()
        for name, p in model.named_parameters():
            grads[name].append(p.grad.detach().clone())
    model.zero_grad()
    return {name: torch.stack(g) for name, g in grads.items()}


@pytest.fixture
def setup(config, make_batch):
    torch.manual_seed(0)
    model = EHRModel(config)
    model.per_example_grads = True  # as the DP trainer sets it while the hooks are on
    batch = make_batch(config, LENGTHS, T=7)
    negatives = torch.randn(len(LENGTHS), config.contrastive_negatives, config.pro_dim)
    return model, batch, negatives


def test_the_head_over_targets_only_gives_the_same_losses_and_gradients(setup):
    model, batch, negatives = setup  # per_example_grads: the head over every position
    dense = model.per_example_loss(batch, negatives=negatives)
    dense.sum().backward()
    dense_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.per_example_grads = False  # the plain trainer's: the head where a target counts
    gathered = model.per_example_loss(batch, negatives=negatives)
    gathered.sum().backward()
    torch.testing.assert_close(gathered, dense)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, dense_grads[name], msg=lambda m, n=name: f"{n}: {m}")


def test_validator_finds_no_unsupported_layers(config):
    assert ModuleValidator.validate(EHRModel(config), strict=False) == []


def test_per_sample_gradients_under_hooks_are_exact(setup):
    model, batch, negatives = setup
    expected = naive_per_example_grads(model, batch, negatives)
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    wrapped._module.per_example_loss(batch, negatives=negatives).sum().backward()
    names = [name for name, _ in model.named_parameters()]
    assert any("note_proj" in n for n in names) and any("pro_encoder" in n for n in names)
    for name, p in model.named_parameters():
        assert p.grad_sample is not None, name
        torch.testing.assert_close(p.grad_sample, expected[name], atol=1e-6, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")
    wrapped._close()


def test_ghost_clipping_gives_the_clipped_sum_of_per_example_gradients(setup):
    model, batch, negatives = setup
    expected = naive_per_example_grads(model, batch, negatives)
    flat = torch.cat([g.flatten(1) for g in expected.values()], dim=1)  # [B, n_params]
    norms = flat.norm(dim=1)
    max_norm = float(norms.median())  # clip some examples, not all
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)

    wrapped = GradSampleModuleFastGradientClipping(
        model, batch_first=True, loss_reduction="sum", max_grad_norm=max_norm,
        use_ghost_clipping=True)
    losses = wrapped._module.per_example_loss(batch, negatives=negatives)
    losses.sum().backward(retain_graph=True)  # pass 1: per-example norms only
    torch.testing.assert_close(wrapped.get_norm_sample(), norms, rtol=1e-4, atol=1e-6)
    got_coef = wrapped.get_clipping_coef()
    model.zero_grad()
    wrapped.disable_hooks()
    (got_coef * losses).sum().backward()  # pass 2: gradient of the clipped sum
    for name, p in model.named_parameters():
        clipped_sum = torch.einsum("b,b...->...", coef, expected[name])
        scale = float(clipped_sum.abs().max())  # float32 round-off relative to the gradient
        torch.testing.assert_close(p.grad, clipped_sum, atol=1e-4 * scale, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_an_empty_poisson_batch_takes_a_dp_step(setup):
    from opacus.optimizers import DPOptimizer

    model, batch, _ = setup
    # sum, not mean: the mean of an empty batch is NaN; the optimizer divides by
    # expected_batch_size instead
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                            max_grad_norm=1.0, expected_batch_size=3, loss_reduction="sum")
    before = [p.detach().clone() for p in model.parameters()]
    for step_batch in (Batch(*(t[:0] for t in batch)), batch):  # empty, then full
        optimizer.zero_grad()
        losses = model.per_example_loss(step_batch)
        assert losses.shape == step_batch.tokens.shape[:1]
        losses.sum().backward()
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    wrapped._close()
