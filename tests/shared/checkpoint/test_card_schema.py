"""A checkpoint is another party's file: every model card field is type-checked before
use, so a card with wrong types is a one-line refusal, never a crash (issue 18, section 4)."""

from __future__ import annotations

import json

import pytest

from fedehr.shared.checkpoint import CheckpointError, ModelCard
from fedehr.shared.checkpoint import format as ckpt
from tests.fixtures.cli import run_fedehr
from tests.shared.registry.consortium import make_pki, save_checkpoint

BAD_FIELDS = [
    ("rounds", "two"),
    ("rounds", True),
    ("architecture", ["d_model", 64]),
    ("training", "fast"),
    ("training", {"history": [{"participants": 3}]}),
    ("training", {"history": "all"}),
    ("privacy", {"a": "eight"}),
    ("privacy", {"a": {"epsilon": "8", "delta": 1e-5, "accountant": "rdp"}}),
    ("privacy", {"a": {"epsilon": 8, "delta": 1e-5, "accountant": ["rdp"]}}),
    ("privacy", {"a": {"epsilon": 8, "delta": 1e-5, "accountant": "rdp", "history": [[1]]}}),
    ("privacy", {"a": {"epsilon": 8, "delta": 1e-5, "accountant": "rdp",
                       "history": [[1.0, 0.1, "x"]]}}),
    ("data_fingerprints", {"a": 7}),
    ("files", ["model.safetensors"]),
    ("vocab_hash", 12),
    ("created_at", None),
    ("notes", {"a": 1}),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("Prüfung ä")
    path = root / "model ö"
    save_checkpoint(path, make_pki(root / "pki"), rounds=2)
    return path


def _with_card_field(checkpoint, tmp_path, name, value):
    import shutil

    copy = tmp_path / "ckpt [x]"
    shutil.copytree(checkpoint, copy)
    card = json.loads((copy / ckpt.CARD).read_text())
    card[name] = value
    (copy / ckpt.CARD).write_text(json.dumps(card))
    return copy


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS)
def test_a_card_field_of_the_wrong_type_is_a_checkpoint_error_naming_it(name, value):
    card = ModelCard(architecture={"d": 4}).to_dict()
    card[name] = value
    with pytest.raises(CheckpointError, match=f"'{name}|'{name}\\."):
        ModelCard.from_dict(card)


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS[:8])
def test_verify_refuses_a_card_of_wrong_types_in_one_line(checkpoint, tmp_path, capsys,
                                                          name, value):
    bad = _with_card_field(checkpoint, tmp_path, name, value)
    result = run_fedehr(capsys, "model", "verify", bad)
    assert result.code == 1
    assert "FAILED" in result.out and f"'{name}" in result.out
    assert "Traceback" not in result.out + result.err


def test_card_view_of_a_card_of_wrong_types_says_so_without_a_traceback(checkpoint, tmp_path,
                                                                        capsys):
    bad = _with_card_field(checkpoint, tmp_path, "privacy", {"[bold]": {"epsilon": "x"}})
    result = run_fedehr(capsys, "model", "card", bad)
    assert result.code != 0 and "'privacy.[bold].epsilon'" in result.err


def test_card_view_prints_markup_in_a_card_as_written(checkpoint, tmp_path, capsys):
    card = json.loads((checkpoint / ckpt.CARD).read_text())
    spent = {"epsilon": 1.0, "delta": 1e-5, "accountant": "[red]rdp", "epsilon_budget": 8.0}
    bad = _with_card_field(checkpoint, tmp_path, "privacy", {"[/]site [b]": spent})
    (bad / ckpt.CARD).write_text(json.dumps({**json.loads((bad / ckpt.CARD).read_text()),
                                             "notes": "[/bold] ok [link=x]",
                                             "training": {**card["training"],
                                                          "federation": "[/]fed"}}))
    result = run_fedehr(capsys, "model", "card", bad)
    assert result.code == 0, result.err
    for text in ("[/]site [b]", "[red]rdp", "[/bold] ok [link=x]", "[/]fed"):
        assert text in result.out


@pytest.mark.parametrize(("field", "value"), [
    ("tokens", 5), ("tokens", [1, 2]), ("bin_edges", {"LAB//x": "low"}),
    ("fold", {"a": 1}), ("time_edges_days", ["one"]), ("time_edges_days", None),
])
def test_verify_refuses_a_vocabulary_of_wrong_types_in_one_line(tmp_path, capsys, field, value):
    """A checkpoint signed by its own key (no --trusted-key) may hold any vocab.json."""
    from torch import nn

    from fedehr.shared.checkpoint import generate_signing_key, save
    from tests.shared.registry.consortium import tiny_vocab

    real = tiny_vocab()

    class Malformed:
        hash = "0" * 64

        def to_json(self, path):
            data = json.loads(json.dumps(real.to_dict()))
            data[field] = value
            path.write_text(json.dumps(data))

    key = generate_signing_key(tmp_path / "k.pem")
    folder = tmp_path / "ckpt"
    save(folder, nn.Linear(2, 2), Malformed(), ModelCard(architecture={"d": 2}), key)
    result = run_fedehr(capsys, "model", "verify", folder)
    assert result.code == 1 and "FAILED" in result.out and f"'{field}'" in result.out
