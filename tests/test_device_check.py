"""benchmarks/device_check.{sh,py} without a GPU: the slice and extrapolation arithmetic, the argument
handling, the install/tests/amp steps' decisions on scripted subprocess results, and the CPU run of the
fpr, shortlist and stream steps end to end."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import device_check as dc  # noqa: E402


def test_market_slice_and_its_extrapolation_factors():
    full = dc.market_slice(1.0)
    assert (full.p, full.g, full.m, full.d) == (3368, 15913, 110, 2048) and full.factor == 1.0
    assert full.flops == 2 * 3368 * 110 * 15913 * 110 * 2048  # the "2.7 PFLOP" of the exact matrix
    assert 2.65e15 < full.flops < 2.66e15
    quarter = dc.market_slice(0.25)
    assert (quarter.p, quarter.g) == (842, 3978)
    assert quarter.factor == pytest.approx(3368 * 15913 / (842 * 3978), rel=1e-15)
    assert quarter.probe_factor == 4.0
    assert quarter.flops * quarter.factor == pytest.approx(full.flops, rel=1e-12)
    tiny = dc.market_slice(1e-6)
    assert (tiny.p, tiny.g) == (1, 1)  # at least one image each
    assert full.feature_bytes(4) == (3368 + 15913) * 110 * 2048 * 4
    for bad in (0, -0.5, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="--scale must be in"):
            dc.market_slice(bad)


def test_fitting_scale_meets_the_time_and_memory_limits():
    full = dc.market_slice(1.0)
    # a rate at which the full engine run (GEMM time x overhead) takes 80 s: 20 s is a quarter of the pairs
    rate = full.flops * dc.ENGINE_OVERHEAD / 80.0
    assert dc.fitting_scale(rate, seconds_per_run=20.0) == pytest.approx(0.5)
    assert dc.fitting_scale(rate * 100, seconds_per_run=20.0) == 1.0  # never more than the whole set
    # memory: features (float64) must fit in half the free memory
    free = full.feature_bytes(8) * 0.2
    assert dc.fitting_scale(rate * 100, free_bytes=free) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--scale", "0"], "--scale must be in (0, 1]"),
        (["--scale", "1.5"], "--scale must be in (0, 1]"),
        (["--scale", "nan"], "--scale must be in (0, 1]"),
        (["--steps", "fpr,gemm"], "--steps: unknown gemm"),
        (["--steps", ","], "--steps: unknown (none given)"),
        (["--budget-s", "-1"], "--budget-s must be a positive number"),
        (["--memory-gib", "0"], "--memory-gib must be positive"),
        (["--backend", "opencl"], "invalid choice: 'opencl'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        dc.parse_args(argv)
    assert info.value.code == 2 and needle in capsys.readouterr().err


def test_steps_run_in_the_checks_order_whatever_order_they_are_given():
    assert dc.parse_args(["--steps", "stream,fpr"]).steps == ["fpr", "stream"]
    assert dc.parse_args([]).steps == list(dc.STEPS)


def test_the_gpu_extra_is_read_from_pyproject(tmp_path):
    assert dc.gpu_requirements() and all(r.startswith("cupy") for r in dc.gpu_requirements())
    other = tmp_path / "pyproject.toml"
    other.write_text('[project.optional-dependencies]\ngpu = ["cupy-cuda13x>=14", "nvidia-x==1"]\n')
    assert dc.gpu_requirements(other) == ["cupy-cuda13x>=14", "nvidia-x==1"]
    assert dc.requirement_met("numpy>=1.0") == np.__version__
    assert dc.requirement_met("numpy<1.0") is None
    assert dc.requirement_met("no-such-distribution-xyz>=1") is None


class Scripted:
    """A subprocess runner that returns scripted results, keeping the commands it was given."""

    def __init__(self, *results: tuple[int, str]) -> None:
        self.results, self.commands = list(results), []

    def __call__(self, cmd, timeout):
        self.commands.append(cmd)
        code, out = self.results.pop(0)
        return subprocess.CompletedProcess(cmd, code, out, "")


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("cupy_here", [None, "cupy-cuda13x 14.2.0, 1 GPU(s)"])
def test_install_step_reports_a_gpu_extra_that_cannot_be_installed(monkeypatch, capsys, cupy_here):
    monkeypatch.setattr(dc, "gpu_requirements", lambda: ["no-such-distribution-xyz>=13"])
    monkeypatch.setattr(dc, "installed_cupy", lambda: cupy_here)
    run = Scripted((0, ""), (1, "ERROR: Could not find a version that satisfies the requirement"))
    dc.step_install(dc.Report(None), 60, run)
    lines = _lines(capsys)
    assert run.commands[0][-4:] == ["--no-deps", "--no-build-isolation", "-e", "."]
    assert run.commands[1][-1] == "no-such-distribution-xyz>=13" and "--retries" in run.commands[1]
    assert lines[0] == "install: project (ok)"
    assert "cannot be installed here (ERROR: Could not find a version" in lines[1]
    assert lines[1].endswith(f"using the CuPy already here: {cupy_here}" if cupy_here
                             else "and no CuPy is here: the GPU steps will fail")


def test_install_step_takes_a_met_requirement_as_it_is(monkeypatch, capsys):
    monkeypatch.setattr(dc, "gpu_requirements", lambda: ["numpy>=1"])
    run = Scripted((1, "error: no setuptools"))
    dc.step_install(dc.Report(None), 60, run)
    lines = _lines(capsys)
    assert len(run.commands) == 1  # nothing to install for a met requirement
    assert lines == ["install: project (FAILED: error: no setuptools)",
                     f"install: gpu extra numpy>=1: installed ({np.__version__})"]


def test_tests_step_reports_the_summary_and_each_failure(capsys):
    out = "..F.s\nFAILED tests/test_matching_cupy.py::test_x - AssertionError\n1 failed, 3 passed, 1 skipped in 9.1s\n"
    run = Scripted((1, out))
    dc.step_tests(dc.Report(None), 60, run)
    assert run.commands[0][1:5] == ["-m", "pytest", "-m", "gpu"]
    files = run.commands[0][run.commands[0].index("--continue-on-collection-errors") + 1:]
    assert {"tests/test_matching_cupy.py", "tests/test_match_streaming.py"} <= set(files)
    assert "tests/test_device_check.py" not in files and all((ROOT / f).is_file() for f in files)
    assert _lines(capsys) == ["tests (-m gpu): 1 failed, 3 passed, 1 skipped in 9.1s",
                              "  FAILED tests/test_matching_cupy.py::test_x - AssertionError"]


def test_amp_step_runs_bench_train_at_the_papers_geometry(capsys):
    run = Scripted((0, "training throughput: resnet50 384x128 ...\n  bare forward+backward 900 images/s\n"),
                   (2, "Traceback ...\nRuntimeError: CUDA error\n"))
    dc.step_amp(dc.Report(None), 60, run)
    cmd = " ".join(run.commands[0])
    for part in ("bench_train.py", "--backbone resnet50", "--input-size 384x128", "--batch-p 16", "--batch-k 4",
                 "--device cuda", "--amp"):
        assert part in cmd
    assert _lines(capsys) == ["amp: training throughput: resnet50 384x128 ...", "amp: bare forward+backward 900 images/s"]
    dc.step_amp(dc.Report(None), 60, run)
    assert _lines(capsys) == ["amp: FAILED: Traceback ... | RuntimeError: CUDA error"]


def _number(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def test_cpu_run_of_the_array_steps_end_to_end(tmp_path, capsys):
    out = tmp_path / "check.txt"
    assert dc.main(["--backend", "numpy", "--scale", "0.001", "--steps", "fpr,shortlist,stream", "--out", str(out),
                    "--memory-gib", "0.25"]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out  # one file holds every line printed
    s = dc.market_slice(0.001)
    assert f"slice: scale 0.001 -> {s.p} query x {s.g} gallery images" in text
    assert "precision auto picks float32 on numpy" in text
    for precision in ("float32 (auto)", "float64", "tf32x3"):
        line = next(l for l in text.splitlines() if l.startswith(f"fpr {precision}:"))
        engine, gemm = _number(r"engine ([\d.]+) s", line), _number(r"GEMM ([\d.]+) s,", line)
        # the printed values are rounded to 0.01 s: the ratio and extrapolation agree within that rounding
        ratio = _number(r"ratio ([\d.]+)", line)
        assert (engine - 0.005) / (gemm + 0.005) - 0.005 <= ratio <= (engine + 0.005) / max(gemm - 0.005, 1e-9) + 0.005
        extrapolated = _number(r"extrapolated (\d+) s", line)
        assert (engine - 0.005) * s.factor - 1 <= extrapolated <= (engine + 0.005) * s.factor + 1
        assert _number(r"reference on 4 pairs ([\d.e+-]+)", line) < 1e-5  # the engine's contract
        if not precision.startswith("float64"):  # float64 runs first: the others against its whole matrix
            assert _number(r"float64\| on the whole matrix ([\d.e+-]+)", line) < 1e-5
    for precision in ("float32", "tf32x3"):
        line = next(l for l in text.splitlines() if l.startswith(f"contract {precision}: CNN-like"))
        assert _number(r"float64\| ([\d.e+-]+) \(within 1e-5\)", line) <= 1e-5
    for precision in ("float64", "float32", "tf32x3"):  # each precision asked for by name, never "auto"
        shortlist = next(l for l in text.splitlines() if l.startswith(f"shortlist K={s.g - 1} {precision}:"))
        assert f"x{s.probe_factor:.1f}" in shortlist
        stream = next(l for l in text.splitlines() if l.startswith(f"stream {precision}:"))
        assert _number(r"max \|streamed - in-memory\| ([\d.e+-]+)", stream) <= 1e-6
    assert text.splitlines()[-1].endswith("0 step(s) failed")


def test_cupy_backend_without_a_gpu_fails_in_one_line(tmp_path, capsys):
    from reid_eval.matching import get_array_module

    try:
        get_array_module("cupy")
        pytest.skip("a GPU is here: the failure path cannot be shown")
    except ValueError:
        pass
    assert dc.main(["--steps", "fpr,stream", "--out", str(tmp_path / "c.txt")]) == 1
    lines = (tmp_path / "c.txt").read_text().splitlines()
    assert lines[1].startswith("fpr,stream: FAILED: backend 'cupy' needs CuPy and a CUDA GPU")
    assert lines[-1].endswith("1 step(s) failed")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_shell_entry_point_writes_one_file(tmp_path):
    script = ROOT / "benchmarks" / "device_check.sh"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)}
    if shutil.which("nvidia-smi") is None:
        proc = subprocess.run(["bash", str(script), "no_gpu.txt"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1 and "no CUDA GPU here" in proc.stderr
        assert "no CUDA GPU here" in (tmp_path / "no_gpu.txt").read_text()
    proc = subprocess.run(["bash", str(script), "cpu.txt", "--backend", "numpy", "--scale", "0.0005", "--steps", "fpr"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (tmp_path / "cpu.txt").read_text()  # relative to where it was started, not the repository
    assert text.startswith("device check, ") and "numpy " in text.splitlines()[1]
    assert "fpr float64:" in text and text.splitlines()[-1].endswith("0 step(s) failed")
