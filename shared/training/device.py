"""Which torch device trains: `auto` takes the first GPU when one is usable.

Sites with a GPU set `training.device` in site.yaml (`auto`, `cpu`, `cuda`,
`cuda:N`); the rest need do nothing. Asking for a GPU that is not there is a
configuration error, not a silent fall-back to a CPU run that takes a week.
"""

from __future__ import annotations

import torch

from fedehr.shared.errors import ConfigError

CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str, *, where: str = "training.device") -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"{spec!r} is not a device", where=where,
                          fix=f"use {CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device type {device.type!r} is not supported", where=where,
                          fix=f"use {CHOICES}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{spec} was asked for but torch sees no CUDA GPU "
                          f"(torch {torch.__version__})", where=where,
                          fix="install a CUDA build of torch (deploy/docker/site-cuda), or "
                              "set it to auto or cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{spec}: only {torch.cuda.device_count()} GPU(s) present",
                          where=where, fix="pick an index below the GPU count")
    return device
