"""Public windows in every DP-SGD batch: the anchor trained *with* a site's patients.

Each DP-SGD step adds `per_step` windows drawn from a public dataset (the
MIMIC-IV demo anchor) to the Poisson batch of the site's patients. Every row,
public or private, is clipped to ``max_grad_norm`` alike; the noise is the
same; the noised sum is divided by the expected private batch plus `per_step`.
In a run of several processes, process 0 adds the public rows.

Why the privacy cost does not move: the public rows' clipped gradients depend
on no patient (the public rows and their draw come from public data and a seed),
so adding or removing one patient still changes the clipped sum by at most
``max_grad_norm``, and the same noise covers it. The release is the private
mechanism's output shifted by an amount that is computable without the private
data; the ledger's charge is unchanged.

Why mix at all: the sites' data moves the shared transformer away from what the
anchor taught (dp_recipe_sweep.py: without noise the anchor's loss ends far higher,
and central training keeps it only when the anchor's windows are pooled in).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fedehr.client.privacy.noise import subkey
from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer.batch import FIELDS, Batch


class PublicMix:
    """Draws `per_step` public windows per step (without replacement within a step);
    `seed` is the run's key, of which the draw takes its own subkey (not the sampler's)."""

    def __init__(self, dataset: Dataset | None, per_step: int, *, seed: int = 0):
        if dataset is None:
            raise ConfigError("public windows per step need a public dataset",
                              where="DP training", fix="pass the anchor's training windows")
        n = len(dataset)  # type: ignore[arg-type]
        if per_step < 1:
            raise ConfigError(f"public windows per step must be >= 1, got {per_step}",
                              where="DP training", fix="pass a positive number, or no "
                              "public dataset")
        if n == 0:
            raise ConfigError("the public dataset to mix into DP-SGD batches is empty",
                              where="DP training", fix="check the anchor's training split")
        self.dataset, self.per_step = dataset, min(per_step, n)
        self.generator = torch.Generator().manual_seed(
            int.from_bytes(subkey(seed, "public-mix")[:8], "big") >> 1)

    def draw(self) -> Batch:
        picks = torch.randperm(len(self.dataset), generator=self.generator)[:self.per_step]
        rows = [self.dataset[int(i)] for i in picks]
        return Batch(*(torch.stack([torch.as_tensor(r[f]) for r in rows])
                       for f in range(len(FIELDS))))

    def join(self, private: Batch) -> Batch:
        """The private rows first, then this step's public rows."""
        public = self.draw().to(private.tokens.device)
        return Batch(*(torch.cat([a.to(b.dtype), b]) for a, b in zip(private, public,
                                                                      strict=True)))
