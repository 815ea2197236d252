"""One DP model trained by several CPU processes at one site (site.yaml `training.processes`).

Data-parallel DP-SGD after Opacus' distributed support (`DistributedDPOptimizer`,
as in Opacus' DDP tutorial): every process holds the same model and the same
memory-mapped patients, and per step

- Poisson sampling is one sample of all patients: process r owns the patients
  r, r + N, r + 2N, ... and includes each with the run's `sample_rate`, from its
  own generator keyed by the release key and r. The union of the local batches
  is exactly a Poisson sample at that rate; an empty local batch still takes
  part in the step (Opacus' distributed sampler skips it, which would put the
  processes out of step, so the sampler here is our own).
- each process clips its patients' per-example gradients at `max_grad_norm`;
- the noise is added once in total, by process 0 only, from the keyed
  generator of `noise.py` with the same key and purpose as a single process:
  the summed update then carries exactly the noise of a one-process run (the
  same draws), and no other process needs the secret key. (Each process
  adding noise / sqrt(N) would give the same distribution but N keyed streams
  to derive and audit.)
- gradients are summed over the processes (gloo all-reduce) and divided by the
  expected batch size q * n, as in one process, so every process applies the
  same update and the weights stay identical.

The privacy ledger is charged once, in the calling process, with the same
(noise multiplier, sample rate, steps) as a one-process run of the same
settings. The workers are forked (Linux): they share the model and the
memory-mapped token cache with the caller without copying or pickling them.
GPUs: this path runs on CPU processes only (gloo); several GPUs would need
NCCL and one device per process, which is not built yet.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedehr.client.privacy.ledger import PrivacyLedger
from fedehr.client.privacy.noise import GaussianNoise, subkey
from fedehr.shared.errors import ConfigError
from fedehr.shared.training.trainer import Progress, Tally, TrainResult

RESULT_FILE = "rank0.pt"


class ShardPoissonSampler:
    """Process `rank`'s part of one Poisson sample: its patients, each kept with
    probability `sample_rate`, for `steps` batches (empty ones included)."""

    def __init__(self, patients: int, sample_rate: float, rank: int, world: int, steps: int,
                 generator: torch.Generator):
        self.indices = torch.arange(rank, patients, world)
        self.sample_rate, self.steps, self.generator = sample_rate, steps, generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            keep = torch.rand(len(self.indices), generator=self.generator) < self.sample_rate
            yield self.indices[keep].tolist()


def shard_sampling_seed(key: int, rank: int, world: int) -> int:
    """A 63-bit torch seed for process `rank`'s sampling, derived from the release key."""
    return int.from_bytes(subkey(key, f"sampling/{rank}-of-{world}")[:8], "big") >> 1


def train_dp_processes(model: nn.Module, dataset: Dataset, plan, *, processes: int, lr: float,
                       dp, ledger: PrivacyLedger | None, round_id: str | None, seed: int,
                       progress: Progress | None, weight_decay: float, proximal_mu: float,
                       num_threads: int | None, device,
                       before_noise: Callable[[], None] | None,
                       after_noise: Callable[[list[torch.Tensor]], None] | None,
                       mix=None) -> TrainResult:
    """`train_dp` in `processes` forked CPU processes (see the module text); `plan` is the
    one-process plan, already checked against the ledger. `mix` (a `PublicMix`): process 0
    adds the public rows, so the sum over the processes holds them once."""
    from fedehr.client.privacy.dp_sgd import dp_result

    if torch.device(device).type != "cpu":
        raise ConfigError(f"training.processes: {processes} runs on CPU processes only "
                          f"(gloo), not on {device}", where="site.yaml training",
                          fix="set training.processes: 1 on a GPU site, or training.device: cpu")
    if processes > plan.patients:
        raise ConfigError(f"training.processes: {processes} is more than the {plan.patients} "
                          "patients", where="site.yaml training", fix="use fewer processes")
    threads = max(1, (num_threads or torch.get_num_threads()) // processes)
    job = dict(model=model, dataset=dataset, plan=plan, lr=lr, dp=dp, seed=seed,
               weight_decay=weight_decay, proximal_mu=proximal_mu, threads=threads,
               progress=progress, before_noise=before_noise, after_noise=after_noise, mix=mix)
    model.cpu()
    with tempfile.TemporaryDirectory(prefix="fedehr-dp-") as tmp:
        job["store"], job["out"] = str(Path(tmp) / "store"), Path(tmp)
        try:
            _run_processes(job, processes)
        except BaseException:
            # The steps taken are not known here; charging all planned ones is the safe side.
            _charge(ledger, plan, plan.steps, round_id)
            raise
        saved = torch.load(Path(tmp) / RESULT_FILE, weights_only=False)
    model.load_state_dict(saved["state"])
    tally = Tally()
    tally.start -= saved["seconds"]
    for name in ("steps", "empty", "examples", "tokens", "loss_sum", "loss_steps"):
        setattr(tally, name, saved[name])
    _charge(ledger, plan, tally.steps, round_id)
    return dp_result(plan, tally, ledger)


def _charge(ledger: PrivacyLedger | None, plan, steps: int, round_id: str | None) -> None:
    if ledger is not None and steps > 0:
        ledger.charge(plan.noise_multiplier, plan.sample_rate, steps, purpose="dp-sgd",
                      round_id=round_id, enforce=False)


def _run_processes(job: dict, processes: int) -> None:
    import torch.multiprocessing as mp

    with warnings.catch_warnings():
        # fork in a process with threads: the workers only run torch and numpy code
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork")
        try:
            mp.start_processes(_worker, args=(processes, job), nprocs=processes,
                               start_method="fork", join=True)
        except mp.ProcessRaisedException as exc:
            last = str(exc).strip().splitlines()[-1]
            raise RuntimeError(f"a DP training process failed: {last}") from None


def _worker(rank: int, world: int, job: dict) -> None:
    torch.set_num_threads(job["threads"])
    dist.init_process_group("gloo", init_method=f"file://{job['store']}", rank=rank,
                            world_size=world)
    try:
        tally = _train_shard(rank, world, job)
        totals = torch.tensor([tally.examples, tally.tokens, tally.loss_steps, tally.loss_sum],
                              dtype=torch.float64)
        dist.all_reduce(totals)
        batch_sizes = torch.tensor(tally.batch_sizes, dtype=torch.int64)
        dist.all_reduce(batch_sizes)
        if rank == 0:
            state = {k: v.detach().clone() for k, v in job["model"].state_dict().items()}
            # the loss is the mean over (process, non-empty local batch) of the batch means
            summary = {"state": state, "steps": tally.steps,
                       "empty": int((batch_sizes == 0).sum()), "examples": int(totals[0]),
                       "tokens": int(totals[1]), "loss_steps": int(totals[2]),
                       "loss_sum": float(totals[3]), "seconds": tally.seconds()}
            torch.save(summary, job["out"] / f"{RESULT_FILE}.tmp")
            os.replace(job["out"] / f"{RESULT_FILE}.tmp", job["out"] / RESULT_FILE)
    finally:
        dist.destroy_process_group()


class ShardTally(Tally):
    """A process's tally that also keeps its local batch size per step."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def add(self, batch, losses: torch.Tensor) -> None:
        super().add(batch, losses)
        self.batch_sizes.append(int(batch.tokens.shape[0]))

    def add_empty(self) -> None:
        super().add_empty()
        self.batch_sizes.append(0)


def _train_shard(rank: int, world: int, job: dict) -> Tally:
    from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
    from opacus.optimizers import get_optimizer_class
    from torch.utils.data import default_collate

    from fedehr.client.privacy.dp_sgd import (
        dp_steps,
        observe_noised_gradient,
        privacy_engine,
        private_model,
        use_keyed_noise,
    )

    model, dataset, plan, dp = job["model"], job["dataset"], job["plan"], job["dp"]
    generator = torch.Generator().manual_seed(shard_sampling_seed(job["seed"], rank, world))
    sampler = ShardPoissonSampler(plan.patients, plan.sample_rate, rank, world, plan.steps,
                                  generator)
    first = dataset[0]
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=wrap_collate_with_empty(
        collate_fn=default_collate, sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
        dtypes=[dtype_safe(x) for x in first]))
    adamw = torch.optim.AdamW(model.parameters(), lr=job["lr"],
                              weight_decay=job["weight_decay"])
    tally = ShardTally()
    public = job["mix"].per_step if job["mix"] is not None else 0
    with private_model(model, privacy_engine(plan), adamw, loader, plan, dp) as (hooks, _):
        optimizer = get_optimizer_class("flat", distributed=True,
                                        grad_sample_mode=dp.grad_sample_mode)(
            adamw, noise_multiplier=plan.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            expected_batch_size=(plan.sample_rate * plan.patients + public) / world,
            loss_reduction="mean")
        # The sum over processes is divided by N (loss_reduction "mean"): each process
        # divides by q*n/N, so the update is (clipped sum + noise) / (q*n), as in one process.
        source = GaussianNoise(job["seed"], "dp-sgd") if rank == 0 else None
        use_keyed_noise(optimizer, source, job["before_noise"])
        if rank == 0:
            observe_noised_gradient(optimizer, job["after_noise"])
        dp_steps(model, hooks, optimizer, loader, tally, plan.steps, dp=dp, device="cpu",
                 proximal_mu=job["proximal_mu"], lr=job["lr"],
                 progress=job["progress"] if rank == 0 else None,
                 mix=job["mix"] if rank == 0 else None)
    return tally

