"""`fedehr ui` refuses to serve patient data to the network without TLS and a login."""

from __future__ import annotations

import pytest

from fedehr.shared.cli import main
from fedehr.shared.ui.cli import check_exposure


def run(capsys, *args: str) -> tuple[int, str]:
    try:
        main(["ui", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_a_network_host_without_tls_and_login_is_refused_in_one_line(capsys, tmp_path):
    code, err = run(capsys, "--checkpoint", str(tmp_path), "--data", str(tmp_path),
                    "--host", "0.0.0.0")
    assert code != 0
    assert "without TLS and a login" in err and "Traceback" not in err


def test_a_folder_without_an_evaluation_report_is_refused_in_one_line(capsys, tmp_path):
    code, err = run(capsys, "--checkpoint", str(tmp_path), "--data", str(tmp_path),
                    "--report", str(tmp_path))
    assert code != 0 and "results.json" in err and "no evaluation report here" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_nothing(host):
    assert check_exposure(host, None, None, None) is None


def test_a_network_host_with_tls_and_a_token_file_serves_with_that_token(tmp_path):
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "token").write_text("a-long-enough-token\n")
    token = check_exposure("10.0.0.5", tmp_path / "cert.pem", tmp_path / "key.pem",
                           tmp_path / "token")
    assert token == "a-long-enough-token"


def test_a_short_token_is_refused(tmp_path):
    from fedehr.shared.errors import ConfigError

    (tmp_path / "token").write_text("short")
    with pytest.raises(ConfigError, match="shorter than 12"):
        check_exposure("127.0.0.1", None, None, tmp_path / "token")


def test_the_demo_prints_a_ui_command_on_its_checkpoint_and_first_site(tmp_path):
    import shlex
    from types import SimpleNamespace

    from fedehr.server.demo import _ui_command

    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "a.yaml").write_text("data: /data/hospital_a\nstate_dir: ../site-state/a\n")
    words = shlex.split(_ui_command(SimpleNamespace(site_yamls={"a": sites / "a.yaml"}),
                                    tmp_path / "ckpt"))
    assert words[:3] == ["ui", "--checkpoint", str(tmp_path / "ckpt")]
    assert words[words.index("--data") + 1] == "/data/hospital_a"
    assert words[words.index("--audit-log") + 1] == str(tmp_path / "site-state/a/audit.jsonl")
