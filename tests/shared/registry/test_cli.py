"""`fedehr model verify` and `fedehr model card` on a local checkpoint folder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fedehr.shared.registry.cli import app

runner = CliRunner()


def test_verify_accepts_an_intact_checkpoint_signed_by_the_trusted_key(checkpoint, pki_dir):
    result = runner.invoke(app, ["verify", str(checkpoint), "--trusted-key",
                                 str(pki_dir / "signing" / "consortium.pub")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK") and "round 3" in result.output


def test_verify_fails_with_exit_1_on_tampered_weights(checkpoint):
    raw = bytearray((checkpoint / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (checkpoint / "model.safetensors").write_bytes(bytes(raw))
    result = runner.invoke(app, ["verify", str(checkpoint)])
    assert result.exit_code == 1
    assert result.output.startswith("FAILED") and "model.safetensors does not match" in (
        result.output.replace("\n", ""))


def test_verify_fails_with_exit_1_on_an_understated_epsilon(checkpoint):
    card = json.loads((checkpoint / "model_card.json").read_text())
    card["privacy"]["site-a"]["epsilon"] = 0.1
    (checkpoint / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    result = runner.invoke(app, ["verify", str(checkpoint)])
    assert result.exit_code == 1 and "signature does not match" in result.output


def test_verify_fails_with_exit_1_for_an_untrusted_signer(checkpoint, tmp_path):
    from fedehr.shared.checkpoint import generate_signing_key

    generate_signing_key(tmp_path / "stranger.key")
    result = runner.invoke(app, ["verify", str(checkpoint), "--trusted-key",
                                 str(tmp_path / "stranger.key.pub")])
    assert result.exit_code == 1 and "untrusted key" in result.output


def test_card_shows_rounds_sites_privacy_fingerprints_and_loss_history(checkpoint):
    result = runner.invoke(app, ["card", str(checkpoint)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rounds        3" in out
    assert "site-a" in out and "4.500" in out and "1e-05" in out and "rdp" in out
    assert "sha256:feed" in out
    assert "anchor loss 4.000 -> 2.000 (best 2.000 at round 3)" in out


def test_card_of_a_folder_without_a_card_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["card", str(tmp_path)])
    assert result.exit_code != 0
    assert "cannot read the model card" in str(result.exception)
