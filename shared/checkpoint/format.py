"""The checkpoint folder: safetensors weights, vocabulary, model card, signature.

    <checkpoint>/
        model.safetensors   the model's state_dict (safetensors; never pickle)
        vocab.json          the shared vocabulary (canonical JSON)
        model_card.json     ModelCard (architecture, privacy per site, hashes, ...)
        signature.ed25519   detached Ed25519 signature (see signing.py)
        signer.pub          the signer's public key (PEM)

`save` writes the folder atomically (a reader sees the old checkpoint or the
new one). `verify` checks it without building a model; `load` verifies, then
rebuilds the model from the card's architecture and loads the weights.
Nothing is ever unpickled: weights are read with `safetensors.torch.load_file`
and everything else is JSON. ``signer.pub`` only says who signed; whether that
signer is trusted is the caller's `trusted_public_key` (researchers should
always pass the consortium key).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedehr.shared.atomic import staged_directory, write_bytes
from fedehr.shared.checkpoint import signing
from fedehr.shared.checkpoint.card import CheckpointError, ModelCard
from fedehr.shared.errors import FedEHRError

if TYPE_CHECKING:  # torch is imported only where weights are read or written: every
    import torch  # `fedehr` command imports this module, and torch takes 2-3 s to import
    from torch import nn

WEIGHTS = "model.safetensors"
VOCAB = "vocab.json"
CARD = "model_card.json"
SIGNATURE = "signature.ed25519"
SIGNER = "signer.pub"
SIGNED_FILES = (WEIGHTS, VOCAB, CARD)
KIND = "checkpoint"  # the output marker an --overwrite recognises (atomic.check_output)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies of the weights, without Opacus' ``_module.``."""
    state = {}
    for name, tensor in model.state_dict().items():
        name = name.removeprefix("_module.")
        state[name] = tensor.detach().to("cpu").contiguous().clone()
    return state


def save(path: str | os.PathLike, model: nn.Module, vocab: Any, card: ModelCard,
         signing_key: Ed25519PrivateKey, *, overwrite: bool = False,
         inputs: tuple[str | os.PathLike | None, ...] = ()) -> ModelCard:
    """Write a signed checkpoint folder at `path`; returns the card as written.

    `path` may not overlap `inputs` (the files the run read); an existing `path` is
    replaced only with `overwrite` and only if it is a checkpoint fedehr wrote.

    `vocab` is a `fedehr.shared.tokenizer.vocabulary.Vocabulary` (anything with
    ``to_json(path)`` and a ``hash`` property).
    """
    from safetensors.torch import save_file

    with staged_directory(path, overwrite=overwrite, kind=KIND, inputs=inputs) as stage:
        save_file(plain_state_dict(model), str(stage / WEIGHTS), metadata={"format": "pt"})
        vocab.to_json(stage / VOCAB)
        card.vocab_file = VOCAB
        card.vocab_hash = str(vocab.hash)
        card.files = {WEIGHTS: signing.sha256_file(stage / WEIGHTS),
                      VOCAB: signing.sha256_file(stage / VOCAB)}
        write_bytes(stage / CARD, card.to_json())
        hashes = {name: signing.sha256_file(stage / name) for name in SIGNED_FILES}
        write_bytes(stage / SIGNATURE, signing.sign(signing_key, hashes))
        write_bytes(stage / SIGNER, signing.public_pem(signing_key))
    return card


def verify(path: str | os.PathLike, *,
           trusted_public_key: signing.PublicKeyLike | None = None) -> ModelCard:
    """Check a checkpoint's files, hashes and signature; return its card.

    Raises CheckpointError naming what does not match. Without
    `trusted_public_key` the signature is checked against ``signer.pub``, which
    proves integrity but not who signed: pass the key you trust.
    """
    path = Path(path)
    where = str(path)
    missing = [n for n in (*SIGNED_FILES, SIGNATURE, SIGNER) if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"incomplete checkpoint: missing {', '.join(missing)}",
                              where=where, fix="pull or copy the whole checkpoint folder")
    try:
        signer = signing.load_public_key(path / SIGNER)
    except FedEHRError as exc:
        raise CheckpointError(f"unreadable signer key ({exc.message})", where=where,
                              fix="pull the checkpoint again") from exc
    if trusted_public_key is not None:
        trusted = signing.load_public_key(trusted_public_key)
        if not signing.same_key(signer, trusted):
            raise CheckpointError(
                f"signed by an untrusted key {signing.fingerprint(signer)} "
                f"(trusted: {signing.fingerprint(trusted)})", where=where,
                fix="use a checkpoint from the consortium registry, or pass the right "
                "trusted key")
    hashes = {name: signing.sha256_file(path / name) for name in SIGNED_FILES}
    card_bytes = (path / CARD).read_bytes()
    card = ModelCard.from_json(card_bytes, where=str(path / CARD))
    for name in (WEIGHTS, VOCAB):
        if card.files.get(name) != hashes[name]:
            raise CheckpointError(f"{name} does not match the hash in the model card "
                                  "(altered or corrupt)", where=where,
                                  fix="pull the checkpoint again; do not use this one")
    if not signing.verify(signer, (path / SIGNATURE).read_bytes(), hashes):
        raise CheckpointError("the signature does not match the checkpoint (model card or "
                              "signature altered)", where=where,
                              fix="pull the checkpoint again; do not use this one")
    return card


def load(path: str | os.PathLike, *, trusted_public_key: signing.PublicKeyLike | None = None,
         model_factory: Callable[[dict[str, Any]], nn.Module] | None = None,
         vocab_loader: Callable[[Path], Any] | None = None,
         device: str | torch.device = "cpu") -> tuple[nn.Module, Any, ModelCard]:
    """Verify, then return ``(model in eval mode, vocabulary, card)``.

    By default the model is ``EHRModel(ModelConfig.from_dict(card.architecture))``
    and the vocabulary ``Vocabulary.from_json``; `model_factory` and
    `vocab_loader` replace them (tests, other architectures).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    where = str(path)
    card = verify(path, trusted_public_key=trusted_public_key)
    if vocab_loader is None:
        from fedehr.shared.tokenizer.vocabulary import Vocabulary

        vocab_loader = Vocabulary.from_json
    vocab = vocab_loader(path / VOCAB)
    if str(vocab.hash) != card.vocab_hash:
        raise CheckpointError(f"the vocabulary hash {str(vocab.hash)[:12]}... differs from the "
                              f"model card's {card.vocab_hash[:12]}...", where=where,
                              fix="the checkpoint was assembled from mismatched parts; "
                              "do not use it")
    if model_factory is None:
        from fedehr.shared.model import EHRModel, ModelConfig

        def model_factory(architecture: dict[str, Any]) -> nn.Module:
            return EHRModel(ModelConfig.from_dict(architecture))

    try:  # the architecture is another party's data: a bad value is the checkpoint's fault
        model = model_factory(dict(card.architecture))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"the model card's architecture cannot be built ({exc})",
                              where=where, fix="use a checkpoint written by a compatible "
                              "fedehr") from None
    try:
        state = load_file(str(path / WEIGHTS), device="cpu")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise CheckpointError(f"the weights do not fit the card's architecture ({exc})",
                              where=where, fix="use a checkpoint written by a compatible "
                              "fedehr") from exc
    return model.to(device).eval(), vocab, card
