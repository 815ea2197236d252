"""Signed checkpoints: round trip, and every kind of tampering refused."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch
from torch import nn

from fedehr.shared.atomic import OUTPUT_MARKER
from fedehr.shared.checkpoint import (
    CheckpointError,
    ModelCard,
    generate_signing_key,
    load,
    load_public_key,
    load_signing_key,
    save,
    signing,
    verify,
)
from fedehr.shared.checkpoint import format as ckpt
from fedehr.shared.errors import FedEHRError


class StandInVocab:
    """What the checkpoint needs of a Vocabulary: to_json(path), from_json(path), hash."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def canonical_json(self) -> str:
        return json.dumps({"tokens": self.tokens}, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_json(self, path) -> None:
        with open(path, "w") as fh:
            fh.write(self.canonical_json() + "\n")

    @classmethod
    def from_json(cls, path):
        with open(path) as fh:
            return cls(json.load(fh)["tokens"])


def build(architecture):
    return nn.Sequential(nn.Embedding(architecture["vocab_size"], architecture["d"]),
                         nn.LayerNorm(architecture["d"]))


ARCH = {"vocab_size": 7, "d": 4}


def open_standin(path, **kw):
    return load(path, model_factory=build, vocab_loader=StandInVocab.from_json, **kw)


@pytest.fixture
def key(tmp_path):
    return generate_signing_key(tmp_path / "keys" / "signer.key")


@pytest.fixture
def checkpoint(tmp_path, key):
    torch.manual_seed(0)
    card = ModelCard(architecture=ARCH, rounds=3, training={"steps": 10},
                     privacy={"site-a": {"epsilon": 2.5, "delta": 1e-5, "accountant": "rdp"}},
                     data_fingerprints={"site-a": "sha256:abc"})
    model = build(ARCH)
    save(tmp_path / "ckpt", model, StandInVocab(["[PAD]", "A", "B"]), card, key)
    return tmp_path / "ckpt", model


def test_round_trip_gives_equal_tensors_vocab_and_card(checkpoint, key):
    path, model = checkpoint
    loaded, vocab, card = open_standin(path, trusted_public_key=key.public_key())
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert vocab.tokens == ["[PAD]", "A", "B"]
    assert card.rounds == 3 and card.privacy["site-a"]["epsilon"] == 2.5
    assert card.vocab_hash == vocab.hash
    assert not loaded.training


def test_checkpoint_folder_has_the_five_files_and_no_pickle(checkpoint):
    path, _ = checkpoint
    assert sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER) == sorted(
        ["model.safetensors", "vocab.json", "model_card.json", "signature.ed25519",
         "signer.pub"])
    assert not (path / "model.safetensors").read_bytes().startswith(b"\x80")  # pickle magic


def test_tampered_weights_are_refused(checkpoint):
    path, _ = checkpoint
    raw = bytearray((path / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="model.safetensors does not match"):
        open_standin(path)


def test_tampered_card_is_refused(checkpoint):
    path, _ = checkpoint
    card = json.loads((path / "model_card.json").read_text())
    card["privacy"]["site-a"]["epsilon"] = 0.1  # understate the privacy spent
    (path / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    with pytest.raises(CheckpointError, match="signature does not match"):
        open_standin(path)


def test_tampered_vocab_is_refused(checkpoint):
    path, _ = checkpoint
    StandInVocab(["[PAD]", "A", "EVIL"]).to_json(path / "vocab.json")
    with pytest.raises(CheckpointError, match="vocab.json does not match"):
        open_standin(path)


def test_vocab_hash_mismatch_is_refused_even_when_signed(checkpoint, key):
    path, _ = checkpoint
    card = json.loads((path / "model_card.json").read_text())
    card["vocab_hash"] = "0" * 64  # a signer that signed mismatched parts
    (path / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    hashes = {n: signing.sha256_file(path / n) for n in ckpt.SIGNED_FILES}
    (path / "signature.ed25519").write_bytes(signing.sign(key, hashes))
    with pytest.raises(CheckpointError, match="vocabulary hash"):
        open_standin(path)


def test_tampered_signature_is_refused(checkpoint):
    path, _ = checkpoint
    other = signing.Ed25519PrivateKey.generate()
    hashes = {n: signing.sha256_file(path / n) for n in ckpt.SIGNED_FILES}
    (path / "signature.ed25519").write_bytes(signing.sign(other, hashes))
    with pytest.raises(CheckpointError, match="signature does not match"):
        verify(path)


def test_resigned_by_another_key_is_refused_as_untrusted(checkpoint, key):
    path, _ = checkpoint
    other = signing.Ed25519PrivateKey.generate()
    hashes = {n: signing.sha256_file(path / n) for n in ckpt.SIGNED_FILES}
    (path / "signature.ed25519").write_bytes(signing.sign(other, hashes))
    (path / "signer.pub").write_bytes(signing.public_pem(other))
    assert verify(path).rounds == 3  # integrity holds, but...
    with pytest.raises(CheckpointError, match="untrusted key"):
        verify(path, trusted_public_key=key.public_key())


def test_untrusted_signer_is_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    stranger = generate_signing_key(tmp_path / "stranger.key")
    with pytest.raises(CheckpointError, match="untrusted key"):
        open_standin(path, trusted_public_key=tmp_path / "stranger.key.pub")
    assert stranger is not None


def test_incomplete_checkpoint_is_refused(checkpoint):
    path, _ = checkpoint
    (path / "signature.ed25519").unlink()
    with pytest.raises(CheckpointError, match="missing signature.ed25519"):
        verify(path)


def test_signing_key_is_private_and_reloads(tmp_path, key):
    path = tmp_path / "keys" / "signer.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert signing.same_key(load_signing_key(path).public_key(), key.public_key())
    assert signing.same_key(load_public_key(tmp_path / "keys" / "signer.key.pub"),
                            key.public_key())
    with pytest.raises(FedEHRError, match="already exists"):
        generate_signing_key(path)


def test_a_failed_save_leaves_no_checkpoint(tmp_path, key):
    class BadVocab(StandInVocab):
        def to_json(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save(tmp_path / "ckpt", build(ARCH), BadVocab([]), ModelCard(architecture=ARCH), key)
    assert not (tmp_path / "ckpt").exists()


def test_card_without_full_privacy_terms_is_refused():
    with pytest.raises(CheckpointError, match="accountant"):
        ModelCard(architecture=ARCH, privacy={"site-a": {"epsilon": 1.0, "delta": 1e-5}})


def test_round_trip_with_the_real_ehr_model(tmp_path, key):
    model_mod = pytest.importorskip("fedehr.shared.model")
    vocab_mod = pytest.importorskip("fedehr.shared.tokenizer.vocabulary")
    vocab = vocab_mod.Vocabulary.build({"LAB//A": 5, "DX//B": 3}, min_count=1)
    config = model_mod.ModelConfig.tiny(vocab_size=len(vocab), note_dim=0, image_dim=0)
    model = model_mod.EHRModel(config)
    save(tmp_path / "real", model, vocab, ModelCard(architecture=config.to_dict()), key)
    loaded, loaded_vocab, card = load(tmp_path / "real", trusted_public_key=key.public_key())
    assert isinstance(loaded, model_mod.EHRModel) and loaded_vocab.hash == vocab.hash
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
