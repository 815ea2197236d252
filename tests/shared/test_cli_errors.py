"""Careless input never crashes a command: messages are printed as text, not markup, and
every numeric option is checked against its range (issue 18, section 4)."""

from __future__ import annotations

import pytest

from tests.fixtures.cli import run_fedehr


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "Daten Ä ü"
    folder.mkdir()
    return folder


def test_an_error_quoting_square_brackets_is_printed_as_written(scratch, capsys):
    (scratch / "a[").mkdir()
    missing = scratch / "a[" / "b]"  # the text "a[/b]" is a closing tag to rich
    result = run_fedehr(capsys, "data", "validate", missing)
    assert result.code != 0
    assert "a[/b]: no such" in (result.out + result.err).replace("\n", "")


def _numeric_options():
    import click

    from fedehr.shared.cli import FiniteFloat, build_command

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")
        for param in command.params:
            kind = param.type.inner if isinstance(param.type, FiniteFloat) else param.type
            if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
                yield f"{path} {param.name}", param.type, kind

    return list(walk(build_command(), "fedehr"))


def test_every_numeric_option_has_a_range():
    import click

    unbounded = [name for name, _, kind in _numeric_options()
                 if not isinstance(kind, click.IntRange | click.FloatRange)]
    assert unbounded == []


def test_every_float_option_refuses_nan_and_inf():
    from fedehr.shared.cli import FiniteFloat

    floats = [(name, t) for name, t, kind in _numeric_options() if kind.name.startswith("float")]
    assert floats and all(isinstance(t, FiniteFloat) for _, t in floats)


@pytest.mark.parametrize("argv", [
    ("model", "train-local", "--data", "d", "--out", "o", "--threads", "-1"),
    ("model", "train-local", "--data", "d", "--out", "o", "--lr", "nan"),
    ("model", "train-local", "--data", "d", "--out", "o", "--lr", "inf"),
    ("model", "train-local", "--data", "d", "--out", "o", "--delta", "1"),
    ("model", "ask", "--checkpoint", "c", "--data", "d", "--patient", "1",
     "--max-new-tokens", "-5"),
    ("model", "ask", "--checkpoint", "c", "--data", "d", "--patient", "1",
     "--max-new-tokens", "0"),
    ("model", "ask", "--checkpoint", "c", "--data", "d", "--patient", "1", "--threads", "-1"),
    ("model", "evaluate", "--checkpoint", "c", "--data", "d", "--threads", "-1"),
    ("data", "import", "--from", "synthea", "s", "d", "--seed", "-1"),
    ("registry", "start", "--workdir", "w", "--port", "70000"),
    ("model", "ask", "--checkpoint", "c", "--data", "d", "--patient", str(2**64)),
])
def test_an_out_of_range_number_is_a_usage_error_before_any_work(capsys, argv):
    result = run_fedehr(capsys, *argv)
    assert result.code == 2
    assert "Invalid value" in result.err and "Traceback" not in result.err


def test_a_duration_too_long_for_a_timedelta_is_a_config_error():
    from fedehr.shared.clinical.query import parse_duration
    from fedehr.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="longer than 200 years"):
        parse_duration("99999999999 days", where="prompt")


@pytest.mark.parametrize(("field", "text"), [
    ("strategy", "{proximal_mu: .nan}"),
    ("strategy", "{server_lr: .inf}"),
    ("rounds", "1.0e+400"),
    ("rounds", "100000000000000000000000000000000000000000000000000000000000000000000000000"
               "00000000000000000000000000000000000000000000000000000000000000000000000000"
               "00000000000000000000000000000000000000000000000000000000000000000000000000"
               "00000000000000000000000000000000000000000000000000000000000000000000000000"
               "000000000000000000000"),
])
def test_a_config_number_that_is_not_finite_is_a_config_error(scratch, field, text):
    from fedehr.server.config import load_federation_config
    from fedehr.shared.errors import ConfigError

    config = scratch / "federation.yaml"
    config.write_text(f"name: f\nworkdir: w\nsuperlink: {{insecure: true}}\n{field}: {text}\n")
    with pytest.raises(ConfigError, match="must be"):
        load_federation_config(config)


@pytest.mark.parametrize("argv", [
    ("data", "synth", "{file}", "--sites", "2", "--patients", "20"),
    ("pki", "init", "--dir", "{file}"),
])
def test_a_file_where_a_folder_is_needed_is_one_line_naming_it(scratch, capsys, argv):
    file = scratch / "notiz.txt"
    file.write_text("keep")
    result = run_fedehr(capsys, *(a.format(file=file) for a in argv))
    assert result.code == 1 and str(file) in result.err.replace("\n", "")
    assert file.read_text() == "keep"
