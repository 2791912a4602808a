"""The console script's global behaviour: version, help, one-line errors."""

import subprocess
import sys

from cli.main import main


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
    out = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--debug" in out and "--version" in out
