"""The console script's global behaviour: version, help, one-line errors, lazy command loading."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reid_eval_cli.main import COMMANDS, LazyGroup, cli, main

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_package_version(capsys):
    from reid_eval import __version__

    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_a_usage_error_not_a_traceback(capsys):
    status = main(["no-such-command"])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err and "no-such-command" in err


def test_console_module_runs_help():
    out = subprocess.run([sys.executable, "-m", "reid_eval_cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--debug" in out and "--version" in out


def _help_listing(group: click.Group, format_commands, width: int) -> str:
    ctx = click.Context(group, info_name="reid-eval", terminal_width=width)
    formatter = ctx.make_formatter()
    format_commands(group, ctx, formatter)
    return formatter.getvalue()


def test_command_table_matches_the_command_modules():
    ctx = click.Context(cli, info_name="reid-eval")
    for module_name in sorted({module for module, _summary in COMMANDS.values()}):
        module = importlib.import_module(module_name, "reid_eval_cli")
        defined = {command.name: command for command in module.COMMANDS}
        assert set(defined) == {name for name, (module, _s) in COMMANDS.items() if module == module_name}, module_name
        for name, command in defined.items():
            assert cli.get_command(ctx, name) is command
            # Untruncated: the listing shortens it to the terminal width as click would.
            assert COMMANDS[name][1] == command.get_short_help_str(limit=sys.maxsize), name
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    # The listing drawn from the table equals click's own listing of the imported commands.
    for width in (40, 80, 200):
        assert _help_listing(cli, LazyGroup.format_commands, width) == _help_listing(cli, click.Group.format_commands, width)


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (["--help"], []),
        (["--version"], []),
        (["datasets", "--data-root", "{tmp}"], ["reid_eval_cli.dataset_commands"]),
        (["manifest", "--help"], ["reid_eval_cli.dataset_commands"]),
        (["match", "--help"], ["reid_eval_cli.match_commands"]),
        (["report", "--help"], ["reid_eval_cli.report_commands"]),
    ],
)
def test_cli_imports_only_the_invoked_command_module_and_no_torch(argv, modules, tmp_path):
    code = (
        "import json, sys\n"
        "from reid_eval_cli.main import main\n"
        "status = main(sys.argv[1:])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')"
        " or m.startswith('reid_eval_cli.') and m.endswith('_commands'))\n"
        "print(json.dumps([status, loaded]))\n"
    )
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    status, loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert status == 0, run.stderr
    assert loaded == modules


def test_failing_lazy_import_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.lazy_commands, "broken", ("reid_eval_cli.no_such_module", "A command whose module is missing."))
    assert main(["broken"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ModuleNotFoundError:") and "reid_eval_cli.no_such_module" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModuleNotFoundError):
        main(["--debug", "broken"])


def test_table_entry_missing_from_its_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cli.lazy_commands, "phantom", ("reid_eval_cli.dataset_commands", "Not defined there."))
    assert main(["phantom"]) == 1
    assert "cli.dataset_commands has no command 'phantom'" in capsys.readouterr().err


def test_finite_float_option_refuses_nan_and_infinity_naming_the_option():
    from reid_eval_cli.options import FiniteFloat

    @click.command()
    @click.option("--weight", type=FiniteFloat(min=0.0, min_open=True))
    def command(weight):
        click.echo(repr(weight))

    for bad in ("nan", "inf", "-inf", "NaN", "1e999"):
        result = CliRunner().invoke(command, ["--weight", bad])
        assert result.exit_code == 2 and "--weight" in result.output and "not a finite number" in result.output, bad
    result = CliRunner().invoke(command, ["--weight", "0"])
    assert result.exit_code == 2 and "x>0" in result.output
    assert CliRunner().invoke(command, ["--weight", "2.5e-3"]).output.strip() == "0.0025"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["match", "--metric", "fpr", "--untrained-foreground", "--results-dir", "{file}/x"], "--results-dir"),
        (["match", "--metric", "fpr", "--untrained-foreground", "--cache-dir", "{file}/x/y"], "--cache-dir"),
        (["report", "--results-dir", "{file}"], "--results-dir"),
        (["report", "--results-dir", "{tmp}", "--out-dir", "{file}/out"], "--out-dir"),
        (["datasets", "--data-root", "{file}/data"], "--data-root"),
        (["synthesize", "--out", "{file}/set"], "--out"),
    ],
)
def test_folder_options_under_a_file_are_one_line_errors(argv, option, tmp_path, capsys):
    file = tmp_path / "plain.txt"
    file.write_text("not a folder")
    args = [a.replace("{file}", str(file)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert option in err and str(file) in err and ("lies under" in err or "is a file" in err), err
    assert "Traceback" not in err and "Errno" not in err
    assert file.read_text() == "not a folder"


def test_default_output_folders_stay_out_of_the_tracked_tree():
    from reid_eval_cli.options import DEFAULT_CACHE_DIR, DEFAULT_RESULTS_DIR

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    generated = [DEFAULT_CACHE_DIR / "x" / "k.h5", DEFAULT_RESULTS_DIR / "a__fpr.json", Path("results") / "a__fpr.json",
                 Path("demo-work") / "results" / "r.json", Path("synthetic_occluded") / "manifest.csv"]
    run = subprocess.run(["git", "check-ignore", *map(str, generated)], cwd=ROOT, capture_output=True, text=True)
    assert run.stdout.split() == [str(p) for p in generated]


def test_byte_size_option_refuses_nan_infinity_and_nonsense():
    from reid_eval_cli.options import ByteSize

    @click.command()
    @click.option("--budget", type=ByteSize())
    def command(budget):
        click.echo(repr(budget))

    for good, want in (("1500000000", 1500000000), ("1.5e9", 1500000000), ("1.5GB", 1500000000), ("500MiB", 500 * 2**20)):
        assert CliRunner().invoke(command, ["--budget", good]).output.strip() == str(want), good
    for bad in ("inf", "nan", "1e999", "0", "-5MB", "lots", "5XB"):
        result = CliRunner().invoke(command, ["--budget", bad])
        assert result.exit_code == 2 and "--budget" in result.output and "bytes" in result.output, bad


@pytest.mark.parametrize("option", ["--lr", "--margin", "--alpha", "--tau", "--max-minutes"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_train_numeric_options_refuse_nan_and_inf(option, value, capsys):
    code = main(["train", "--dataset", "synthetic_occluded", option, value])
    err = capsys.readouterr().err
    assert code == 2
    assert option in err and "not a finite number" in err
    assert "Traceback" not in err
