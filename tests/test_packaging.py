"""The built wheel installs only reid-eval's own import names: no top-level `cli` or `data_manifests`."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "reid_eval", "cli", "data_manifests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of the project's sources (building in place would leave build/ in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("reid_eval-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_top_level_names_are_reid_evals_own(wheel):
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"reid_eval", "reid_eval_cli"}
    assert not any(n.startswith(("cli/", "data_manifests/")) for n in names)


def test_wheel_holds_every_package_and_the_dataset_specs(wheel):
    names = set(wheel.namelist())
    # every package folder of the repository, under its installed name
    for folder, installed in (("reid_eval", "reid_eval"), ("cli", "reid_eval_cli"), ("data_manifests", "reid_eval/manifests")):
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                assert f"{installed}/{init.relative_to(REPO / folder).as_posix()}" in names, init
    for spec in (REPO / "data_manifests").glob("*.toml"):
        assert f"reid_eval/manifests/{spec.name}" in names
    assert "reid_eval/report/paper_tables.json" in names


def test_console_script_and_import_names(wheel):
    (entry,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    points = configparser.ConfigParser()
    points.read_string(wheel.read(entry).decode())
    assert dict(points["console_scripts"]) == {"reid-eval": "reid_eval_cli.main:main"}
    # the installed (editable) project answers to the new names, and the CLI finds its dataset specs through them
    assert importlib.util.find_spec("reid_eval_cli.main") is not None
    from reid_eval.datasets import known_datasets

    assert "partial_reid" in known_datasets()
    from reid_eval_cli.main import main

    assert main(["--version"]) == 0
