"""The command-line tools agree on exit statuses (0 ok, 1 some inputs failed, 2 usage
or configuration error) and say so in --help."""

import importlib

import pytest

from speechbrain_s4m.cli import EXIT_STATUS_HELP, EXIT_USAGE

COMMANDS = {
    "s4m-separate": "speechbrain_s4m.inference.separate_command",
    "s4m-export": "speechbrain_s4m.export.speechbrain_folder",
    "s4m-make-data": "speechbrain_s4m.data.synthetic",
    "s4m-make-librimix": "speechbrain_s4m.data.librispeech_mixtures",
    "s4m-plot-curves": "speechbrain_s4m.training.curves",
    "s4m-bench": "speechbrain_s4m.benchmark",
}


def run(module, argv):
    """main(argv)'s status, whether returned or raised by argparse."""
    try:
        return importlib.import_module(module).main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_help_states_the_exit_statuses(prog, capsys):
    assert run(COMMANDS[prog], ["--help"]) == 0
    assert " ".join(EXIT_STATUS_HELP.split()) in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "prog, argv",
    [
        ("s4m-separate", ["--model", "/nonexistent/model", "/nonexistent/input.wav", "--out", "/tmp/s4m-cli-out"]),
        ("s4m-separate", ["--model", "/nonexistent/model", "--out", "/tmp/s4m-cli-out", "/nonexistent-folder/"]),
        ("s4m-separate", ["--no-such-option"]),
        ("s4m-export", ["/nonexistent/run", "/tmp/s4m-cli-export"]),
        ("s4m-make-data", ["--out", "/tmp/s4m-cli-data", "--num-train", "0"]),
        ("s4m-make-librimix", ["/nonexistent/LibriSpeech", "/tmp/s4m-cli-librimix"]),
        ("s4m-plot-curves", ["/nonexistent/run", "--out", "/tmp/s4m-cli-curves.png"]),
        ("s4m-bench", ["--models", "NoSuchModel", "--sections", "params"]),
    ],
)
def test_usage_and_configuration_errors_exit_2(prog, argv, capsys):
    assert run(COMMANDS[prog], argv) == EXIT_USAGE
    assert prog in capsys.readouterr().err
