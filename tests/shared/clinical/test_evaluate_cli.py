"""`fedehr model evaluate` end to end: a tiny checkpoint trained for a few steps with
`fedehr model train-local` on a synthetic hospital, then the report."""

from __future__ import annotations

import json
import math

import pytest

from fedehr.shared.cli import main
from fedehr.shared.data.synth import synthesize

pytestmark = pytest.mark.slow  # trains a checkpoint, then runs the whole evaluation


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    site = synthesize(root / "hospitals", sites=1, patients=200, seed=11)[0].path
    ckpt = root / "ckpt"
    main(["model", "train-local", "--data", str(site), "--out", str(ckpt), "--steps", "3",
          "--batch-size", "16", "--max-len", "64", "--cache", str(root / "cache"),
          "--signing-key", str(root / "signing.key")])
    return root, site, ckpt


def test_evaluate_writes_the_report_plots_and_numbers(trained, capsys):
    root, site, ckpt = trained
    out = root / "report"
    main(["model", "evaluate", "--checkpoint", str(ckpt), "--data", str(site), "--out", str(out),
          "--tasks", "mortality,long_los,icu_transfer", "--ks", "16,all", "--seeds", "2",
          "--zero-shot-samples", "2",
          "--trusted-key", str(ckpt / "signer.pub")])
    printed = capsys.readouterr().out
    assert "fedehr model evaluate" in printed and f"report: {out / 'report.md'}" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["pooling"] == "last+mean"
    assert [t["task"] for t in results["tasks"]] == ["mortality", "long_los", "icu_transfer"]
    for task in results["tasks"]:
        assert task["n_test"] > 0 and task["n_train"] > task["n_test"]
        methods = {(m["method"], m["k"]): m for m in task["methods"]}
        assert {("probe", 16), ("probe", "all"), ("counts", 16), ("counts", "all"),
                ("zero-shot", None)} <= set(methods)
        assert len(methods[("probe", 16)]["runs"]) == 2
        assert len(methods[("probe", "all")]["runs"]) == 1
        for m in methods.values():
            ece = m["mean"]["ece"]
            assert ece is not None and 0.0 <= ece <= 1.0
            auroc = m["mean"]["auroc"]
            assert auroc is None or 0.0 <= auroc <= 1.0
    icu = next(t for t in results["tasks"] if t["task"] == "icu_transfer")
    assert 0 < icu["positives_test"] < icu["n_test"]
    assert not math.isnan(next(m for m in icu["methods"]
                               if m["method"] == "counts" and m["k"] == "all")["mean"]["auroc"])

    report = (out / "report.md").read_text()
    assert "| icu_transfer | probe k=all |" in report
    for png in ("icu_transfer-roc.png", "icu_transfer-reliability.png",
                "icu_transfer-auroc-vs-k.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report


@pytest.mark.parametrize("option, said", [(["--tasks", "sepsis"], "unknown task 'sepsis'"),
                                          (["--pooling", "max"], "unknown pooling 'max'")])
def test_a_bad_option_is_one_line_and_a_non_zero_exit(trained, capsys, option, said):
    root, site, ckpt = trained
    with pytest.raises(SystemExit) as exit_info:
        main(["model", "evaluate", "--checkpoint", str(ckpt), "--data", str(site), "--out",
              str(root / "bad"), *option])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert said in err and option[0] in err and "Traceback" not in err
