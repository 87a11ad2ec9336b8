"""One ``dasr`` command: every subcommand, its module entry point, the shared model options.

Each subcommand is reachable as ``dasr NAME`` and through its old module entry point
(``python -m dasrlib.train``, ...), both running the same add_arguments / run pair; the commands
that load a checkpoint take one group of model options.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dasrlib import cli, data, export, profiling, testsets
from dasrlib.campaign import cli as campaign_cli
from dasrlib.cli_options import MODEL_OPTION_NAMES
from dasrlib.train import cli as train_cli

SUBCOMMAND_NAMES = (
    "upscale",
    "predict",
    "train",
    "fetch",
    "testsets",
    "profile",
    "export",
    "campaign",
)
# (module run by python -m, its arguments that reach one subcommand, the dasr form of them)
MODULE_ENTRIES = [
    ("dasrlib.train", [], ["train"]),
    ("dasrlib.data", ["fetch"], ["fetch"]),
    ("dasrlib.testsets", ["build"], ["testsets", "build"]),
    ("dasrlib.profiling", [], ["profile"]),
    ("dasrlib.export", [], ["export"]),
    ("dasrlib.campaign", ["run"], ["campaign", "run"]),
    ("dasrlib.campaign", ["status"], ["campaign", "status"]),
]
MODEL_COMMANDS = ("upscale", "predict", "export")


def _exit_status(call: Callable[[], int]) -> int:
    """The exit status of a main() call, whether it returns it or raises SystemExit."""
    try:
        return call()
    except SystemExit as stop:
        return int(stop.code or 0)


def _subcommand_parser(name: str) -> argparse.ArgumentParser:
    (command,) = [c for c in cli.SUBCOMMANDS if c.name == name]
    parser = argparse.ArgumentParser(prog=f"dasr {name}")
    command.add_arguments(parser)
    return parser


def test_dasr_lists_all_eight_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert tuple(c.name for c in cli.SUBCOMMANDS) == SUBCOMMAND_NAMES
    assert _exit_status(lambda: cli.main(["--help"])) == 0
    listed = capsys.readouterr().out
    for name in SUBCOMMAND_NAMES:
        assert f"\n    {name} " in listed, name


def test_dasr_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_status(lambda: cli.main([])) == 2
    assert "dasr: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[name] for name in SUBCOMMAND_NAMES]
    + [["testsets", "build"], ["campaign", "run"], ["campaign", "status"]],
    ids=" ".join,
)
def test_every_subcommand_help_works_through_dasr(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_status(lambda: cli.main([*argv, "--help"])) == 0
    assert capsys.readouterr().out.startswith(f"usage: dasr {' '.join(argv)} ")


@pytest.mark.parametrize(
    ("module", "argv", "dasr_argv"), MODULE_ENTRIES, ids=lambda x: " ".join(x) or "-"
)
def test_every_module_entry_point_help_works(
    module: str,
    argv: list[str],
    dasr_argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m MODULE ... --help`` (run as __main__, as python -m does) names the module and
    offers the same options as the dasr form."""
    monkeypatch.setattr(sys, "argv", [module, *argv, "--help"])
    with warnings.catch_warnings():  # re-running a module already imported says so; harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        assert _exit_status(lambda: runpy.run_module(module, run_name="__main__")) == 0
    module_help = capsys.readouterr().out
    assert module_help.startswith(f"usage: python -m {' '.join([module, *argv])} ")
    assert _exit_status(lambda: cli.main([*dasr_argv, "--help"])) == 0
    dasr_help = capsys.readouterr().out
    assert _options(module_help) == _options(dasr_help)
    assert _options(dasr_help)


def _options(help_text: str) -> set[str]:
    return {word.strip("[],") for word in help_text.split() if word.startswith(("--", "[--"))}


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_model_commands_take_the_one_group_of_model_options(name: str) -> None:
    parser = _subcommand_parser(name)
    (group,) = [g for g in parser._action_groups if g.title == "model options"]
    assert [a.option_strings[0] for a in group._group_actions] == list(MODEL_OPTION_NAMES)
    reference = _subcommand_parser("upscale")
    for option in MODEL_OPTION_NAMES:
        mine, theirs = (
            parser._option_string_actions[option],
            reference._option_string_actions[option],
        )
        assert (mine.choices, mine.nargs, mine.metavar) == (
            theirs.choices,
            theirs.nargs,
            theirs.metavar,
        ), option


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_model_options_parse_the_same_in_every_model_command(name: str) -> None:
    required = {"upscale": ["in.png", "-o", "out"], "predict": ["in.png"], "export": ["--out", "o"]}
    options = ["--official", "g.pth", "p.pth", "--device", "cpu", "--precision", "bf16"]
    args = _subcommand_parser(name).parse_args([*required[name], *options, "--level", "weak"])
    assert (args.model, args.official, args.device, args.precision, args.level) == (
        None,
        ["g.pth", "p.pth"],
        "cpu",
        "bf16",
        "weak",
    )


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_model_and_official_exclude_each_other_everywhere(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    required = {"upscale": ["in.png", "-o", "out"], "predict": ["in.png"], "export": ["--out", "o"]}
    argv = [name, *required[name], "--model", "m.safetensors", "--official", "g", "p"]
    assert _exit_status(lambda: cli.main(argv)) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _usage_cases(
    tmp_path: Path,
) -> list[tuple[list[str], Callable[[Sequence[str]], int], list[str]]]:
    """(dasr argv, module main, its argv): usage errors that touch nothing."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    missing = str(tmp_path / "missing.yaml")
    hr, out = str(tmp_path / "hr"), str(tmp_path / "out")
    build = ["build", "--hr", hr, "--out", out, "--levels", "mild"]
    return [
        (["train", "--params", missing], train_cli.main, ["--params", missing]),
        (["train", "--set", "lr"], train_cli.main, ["--set", "lr"]),
        (
            ["fetch", "div2k", "--root", str(a_file)],
            data.main,
            ["fetch", "div2k", "--root", str(a_file)],
        ),
        (["testsets", *build], testsets.main, build),
        (
            ["profile", "--model", "no_such_net", "--meta"],
            profiling.main,
            ["--model", "no_such_net", "--meta"],
        ),
        (["export", "--out", str(a_file)], export.main, ["--out", str(a_file)]),
        (["campaign", "run", "--budget", "soon"], campaign_cli.main, ["run", "--budget", "soon"]),
        (
            ["campaign", "run", "--budget", "1m", "--set", "x"],
            campaign_cli.main,
            ["run", "--budget", "1m", "--set", "x"],
        ),
    ]


@pytest.mark.parametrize("case", range(8))
def test_usage_errors_have_the_same_status_and_line_both_ways(
    case: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dasr_argv, module_main, module_argv = _usage_cases(tmp_path)[case]
    assert _exit_status(lambda: module_main(module_argv)) == 2
    module_err = capsys.readouterr().err
    assert _exit_status(lambda: cli.main(dasr_argv)) == 2
    dasr_err = capsys.readouterr().err
    module_line, dasr_line = module_err.strip().splitlines()[-1], dasr_err.strip().splitlines()[-1]
    assert module_line.startswith("python -m dasrlib.") and dasr_line.startswith("dasr ")
    assert "Traceback" not in module_err + dasr_err
    assert module_line.split(": error: ", 1)[1] == dasr_line.split(": error: ", 1)[1]


def test_campaign_set_values_are_read_as_bounded_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    """An alias bomb in a campaign --set is refused at once, in one line, before anything runs."""
    flow = ", ".join(
        ["&b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        + [f"&b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 10)]
    )
    started = time.monotonic()
    assert campaign_cli.main(["run", "--budget", "1m", "--set", f"device=[{flow}]"]) == 2
    assert time.monotonic() - started < 5.0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m dasrlib.campaign: error:") and "alias" in line


def test_campaign_malformed_set_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert campaign_cli.main(["run", "--budget", "1m", "--set", "device=[cpu"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("python -m dasrlib.campaign: error:")
