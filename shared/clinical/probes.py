"""Few-shot probes: logistic regression on frozen patient embeddings.

The model is never fine-tuned. Each history (see `history.py`) becomes one
vector (`EHRModel.embed`): the model's hidden state at its last token and the
mean of its hidden states over the history (`DEFAULT_POOLING`); a
logistic regression on standardised vectors is fitted on k labelled examples
and scored on held-out ones, the linear-probe protocol of representation
learning (Alain & Bengio, 2016) as EHR foundation-model papers use it
(e.g. CLMBR / EHRSHOT, Wornow et al., 2023, with k-shot sampling).

k examples are drawn stratified: the training prevalence is kept, with at
least one example of each class, so a rare outcome still has a positive at
k = 16. Each k is repeated over seeds and reported as mean and spread; k =
"all" is fitted once on every training example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedehr.shared.tokenizer.batch import PAD_ID, Batch

DEFAULT_KS: tuple[int | str, ...] = (16, 64, 256, "all")
DEFAULT_C = 0.1  # L2 strength on standardised embeddings; few examples need a strong prior
POOLINGS = ("last", "last+mean")
# The last position's hidden state and the mean over the history's positions: on the
# tuning splits of benchmarks/dp_recipe_sweep.py the mean k=all probe AUROC rose over
# the last position alone on every data seed, for central and for federated DP models
DEFAULT_POOLING = "last+mean"


@torch.no_grad()
def embed(model, windows, *, batch_size: int = 64, pooling: str = DEFAULT_POOLING,
          progress: Callable[[int], None] | None = None) -> np.ndarray:
    """float32 [len(windows), width]: the frozen model's vector of each history
    (`EHRModel.embed`: width d_model for pooling "last", 2 d_model for "last+mean").

    Histories are batched by length and each batch is cut to its longest
    history (right padding is masked, so the vectors are the same; most
    histories are far shorter than the context).
    """
    model.eval()
    n = len(windows)
    width = model.config.d_model * (1 if pooling == "last" else 2)
    out = np.zeros((n, width), dtype=np.float32)
    order = np.argsort(_lengths(windows), kind="stable")
    for lo in range(0, n, batch_size):
        idx = order[lo:lo + batch_size]
        parts = [torch.stack(field) for field in zip(*(windows[int(i)] for i in idx),
                                                      strict=True)]
        longest = int((parts[0] != PAD_ID).sum(1).max())
        # tokens, times, note_emb, image_emb have a time axis; pro and pro_mask do not
        batch = Batch(*(p[:, :longest] if k < 4 else p for k, p in enumerate(parts)))
        out[idx] = model.embed(batch, pooling).float().cpu().numpy()
        if progress is not None:
            progress(len(idx))
    return out


def _lengths(windows) -> np.ndarray:
    """Tokens in each window ([BOS] + static prefix + body), without building them."""
    bounds = getattr(windows, "window_bounds", None)
    if bounds is None:
        return np.zeros(len(windows), dtype=np.int64)
    return np.array([1 + b[2] + (b[1] - b[0]) for b in map(bounds, range(len(windows)))])


def stratified_sample(y: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    """Indices of k examples keeping the prevalence, at least one per class; None when
    the labels cannot supply that (one class only, or k < 2)."""
    y = np.asarray(y).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if k < 2 or len(pos) == 0 or len(neg) == 0:
        return None
    if k >= len(y):
        return np.arange(len(y))
    n_pos = int(np.clip(round(k * len(pos) / len(y)), 1, min(len(pos), k - 1)))
    n_neg = k - n_pos
    if n_neg > len(neg):
        n_neg, n_pos = len(neg), k - len(neg)
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False),
                                   rng.choice(neg, n_neg, replace=False)]))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, c: float = DEFAULT_C, seed: int = 0):
    """A standardise + L2 logistic regression pipeline fitted on (x, y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000,
                                                               random_state=seed))
    return model.fit(x, np.asarray(y).astype(int))


def probe_predictions(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int | str,
                      *, seeds: int = 5, c: float = DEFAULT_C,
                      fit: Callable = fit_logistic) -> list[np.ndarray]:
    """Test-set probabilities of one probe per seed (one for k = "all"); [] when k
    examples with both classes cannot be drawn."""
    from threadpoolctl import threadpool_limits

    runs = []
    with threadpool_limits(1):  # small fits: BLAS threads only contend (27x slower here)
        for seed in range(1 if k == "all" else seeds):
            idx = (stratified_sample(y_train, len(y_train), seed) if k == "all"
                   else stratified_sample(y_train, int(k), seed))
            if idx is None:
                break
            model = fit(x_train[idx], y_train[idx], c=c, seed=seed)
            runs.append(model.predict_proba(x_test)[:, 1])
    return runs
