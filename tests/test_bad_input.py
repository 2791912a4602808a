"""The command line on bad input.

Every case runs the CLI and checks: a non-zero exit with one line
``Error: ...`` naming the file or option at fault and no traceback, or,
where the input is legitimately usable (grayscale, RGBA, 16-bit, tiny
images, a query without a match, a missing output folder), a clean success;
and in both cases that nothing already written (caches, results) was lost or
changed. The CLI runs in-process; the lock case runs a real second process.
With REID_EVAL_BAD_INPUT_LOG=FILE the message of every case is written to FILE.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from reid_eval_cli.main import main
from reid_eval.features import read_split
from test_extract_cache import make_partial_reid, small_checkpoint

DATASET = ["--dataset", "partial_reid", "--allow-mismatch", "--device", "cpu"]
MESSAGES: list[tuple[str, int, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _message_log():
    yield
    target = os.environ.get("REID_EVAL_BAD_INPUT_LOG")
    if target:
        with open(target, "w", encoding="utf-8") as out:
            for case, code, line in MESSAGES:
                out.write(f"{case}\t{code}\t{line}\n")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One tiny dataset, checkpoint, finished cache and results folder shared by the cases (never modified)."""
    root = tmp_path_factory.mktemp("bad")
    tree = make_partial_reid(root / "data" / "Partial-REID")
    ckpt = small_checkpoint(root / "small.pt")
    cache, results = root / "cache", root / "results"
    assert main(["extract", *DATASET, "--root", str(tree), "--checkpoint", str(ckpt), "--cache-dir", str(cache), "--batch-size", "6"]) == 0
    assert main(["match", "--metric", "fpr", "--untrained-foreground", "--cache-dir", str(cache), "--results-dir", str(results)]) == 0
    (cache_file,) = (cache / "partial_reid").glob("*.h5")
    return {"root": root, "tree": tree, "ckpt": ckpt, "cache": cache, "cache_file": cache_file, "results": results}


def digests(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folders``: what must stay as it was."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(case: str, result: tuple[int, str, str], *names: str) -> str:
    """Assert a clean refusal: exit 1 or 2, no traceback, last stderr line ``Error: ...`` naming every one of ``names``."""
    code, out, err = result
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert line.startswith("Error: "), err
    for name in names:
        assert str(name) in line, (name, line)
    MESSAGES.append((case, code, line))
    return line


def accepted(case: str, result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    assert "Traceback" not in out + err and "Error" not in err
    line = out.strip().splitlines()[-1]
    MESSAGES.append((case, code, line))
    return line


def copy_tree(base, tmp_path) -> Path:
    return Path(shutil.copytree(base["tree"], tmp_path / "Partial-REID"))


def copy_cache(base, tmp_path) -> Path:
    return Path(shutil.copytree(base["cache"], tmp_path / "cache"))


def extract_args(tree, cache, ckpt, *more):
    return ("extract", *DATASET, "--root", tree, "--checkpoint", ckpt, "--cache-dir", cache, "--batch-size", "6", *more)


# ------------------------------------------------------------------ images


def _corrupt(p: Path) -> None:
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not image data" * 4)


def _truncated(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _not_an_image(p: Path) -> None:
    p.write_text("person 3, camera 2: see the spreadsheet\n")


def _empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize("defect", [_corrupt, _truncated, _not_an_image, _empty], ids=["corrupt", "truncated", "text-file", "empty-file"])
def test_unreadable_image_is_named_and_skip_bad_skips_it(base, tmp_path, capsys, defect):
    tree, cache = copy_tree(base, tmp_path), copy_cache(base, tmp_path)
    bad = tree / "whole_body_images" / "003_02.png"
    defect(bad)
    cache_file = cache / "partial_reid" / base["cache_file"].name
    before = read_split(cache_file, "gallery")
    refused(f"image: {defect.__name__[1:]}", cli(capsys, *extract_args(tree, cache, base["ckpt"])), str(bad))
    after = read_split(cache_file, "gallery")  # the finished cache still reads as before
    assert after.paths == before.paths and np.array_equal(after.global_features, before.global_features)
    line = accepted(f"image: {defect.__name__[1:]}, --skip-bad", cli(capsys, *extract_args(tree, cache, base["ckpt"], "--skip-bad")))
    assert "1 skipped: whole_body_images/003_02.png" in line
    g = read_split(cache_file, "gallery")
    assert g.skipped == ["whole_body_images/003_02.png"] and len(g.paths) == 11


def test_unusual_but_valid_images_are_converted(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    folder = tree / "whole_body_images"
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 255, (64, 32), np.uint8), "L").save(folder / "001_01.png")  # grayscale
    Image.fromarray(rng.integers(0, 255, (64, 32, 4), np.uint8), "RGBA").save(folder / "001_02.png")  # alpha
    Image.fromarray(rng.integers(0, 65535, (64, 32), np.uint16)).save(folder / "002_01.png")  # 16-bit
    Image.fromarray(rng.integers(0, 255, (64, 32, 3), np.uint8)).convert("P").save(folder / "002_02.png")  # palette
    Image.fromarray(rng.integers(0, 255, (3, 2, 3), np.uint8)).save(folder / "003_01.png")  # smaller than any pooling window
    Image.fromarray(rng.integers(0, 255, (1, 300, 3), np.uint8)).save(folder / "003_02.png")  # one pixel high
    for resize in ("fixed", "keep-aspect"):
        accepted(f"images: grayscale, RGBA, 16-bit, palette, 3x2 px, 1x300 px (--resize {resize})",
                 cli(capsys, *extract_args(tree, tmp_path / "cache", base["ckpt"], "--resize", resize)))
    for cache_file in (tmp_path / "cache" / "partial_reid").glob("*.h5"):
        g = read_split(cache_file, "gallery")
        assert len(g.paths) == 12 and not g.skipped
        assert np.isfinite(g.global_features).all() and np.isfinite(g.spatial.local).all()


# ------------------------------------------------------------------ folders and names


def test_empty_split_folder(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    for p in (tree / "whole_body_images").iterdir():
        p.unlink()
    refused("folder: gallery folder empty", cli(capsys, *extract_args(tree, tmp_path / "cache", base["ckpt"])), str(tree / "whole_body_images"), "no images")
    assert not (tmp_path / "cache").exists()


def test_missing_split_folder(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    (tree / "whole_body_images").rename(tree / "gallery")
    refused("folder: gallery folder missing", cli(capsys, *extract_args(tree, tmp_path / "cache", base["ckpt"])), "whole_body_images", str(tree))


def test_split_folder_that_is_a_file_is_called_a_file(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    shutil.rmtree(tree / "whole_body_images")
    (tree / "whole_body_images").write_text("not a folder\n")
    line = refused("folder: gallery folder is a file", cli(capsys, *extract_args(tree, tmp_path / "cache", base["ckpt"])),
                   str(tree / "whole_body_images"), "is a file")
    assert "missing" not in line


def test_dataset_one_level_deeper_is_found_or_named(base, tmp_path, capsys):
    outer = tmp_path / "data" / "Partial-REID"
    shutil.copytree(base["tree"], outer / "Partial_REID")
    line = accepted("folder: unpacked one level deeper, found under --data-root",
                    cli(capsys, "extract", *DATASET, "--data-root", tmp_path / "data", "--checkpoint", base["ckpt"], "--cache-dir", base["cache"]))
    assert line.endswith(str(base["cache_file"]))  # the same images: the same, finished cache
    refused("folder: --root one level too high", cli(capsys, *extract_args(outer, tmp_path / "cache", base["ckpt"])), str(outer / "Partial_REID"), "--root")


def test_root_and_data_root_that_are_not_folders(base, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    refused("option: --root is a file", cli(capsys, *extract_args(afile, tmp_path / "cache", base["ckpt"])), str(afile), "--root")
    refused("option: --data-root missing",
            cli(capsys, "extract", *DATASET, "--data-root", tmp_path / "nowhere", "--checkpoint", base["ckpt"], "--cache-dir", tmp_path / "c"),
            str(tmp_path / "nowhere"), "--data-root")


def test_unparsable_image_name(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    shutil.copyfile(tree / "partial_body_images" / "001_01.png", tree / "partial_body_images" / "holiday photo.png")
    refused("name: unparsable file name", cli(capsys, *extract_args(tree, tmp_path / "cache", base["ckpt"])), "holiday photo.png", "expects names like")


def test_duplicate_stems_are_two_images(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    Image.open(tree / "whole_body_images" / "004_01.png").convert("RGB").save(tree / "whole_body_images" / "004_01.jpg")
    code, out, err = cli(capsys, "manifest", "--dataset", "partial_reid", "--root", tree, "--allow-mismatch", "-o", "-")
    assert code == 0 and "Traceback" not in err
    rows = [r for r in out.splitlines() if r.startswith("whole_body_images/004_01.")]
    assert rows == ["whole_body_images/004_01.jpg,4,2,gallery", "whole_body_images/004_01.png,4,2,gallery"]
    MESSAGES.append(("name: 004_01.png and 004_01.jpg (same stem)", 0, "manifest lists both as two images of pid 4"))


# ------------------------------------------------------------------ checkpoints


def _foreign(path: Path, base) -> None:
    torch.save({"weights": torch.zeros(3)}, path)


def _wrong_architecture(path: Path, base) -> None:
    payload = torch.load(base["ckpt"], weights_only=False)
    payload["config"]["backbone"] = "resnet50"  # resnet18 weights under a resnet50 config
    torch.save(payload, path)


def _truncated_checkpoint(path: Path, base) -> None:
    data = base["ckpt"].read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _text(path: Path, base) -> None:
    path.write_text("my-hostname\n")


@pytest.mark.parametrize("make", [None, _text, _foreign, _wrong_architecture, _truncated_checkpoint],
                         ids=["missing", "text-file", "foreign-torch-file", "wrong-architecture", "truncated"])
def test_bad_checkpoint_is_named_and_nothing_is_written(base, tmp_path, capsys, make):
    ckpt = tmp_path / "model.pt"
    if make is not None:
        make(ckpt, base)
    before = digests(base["cache"])
    case = f"checkpoint: {make.__name__.strip('_').replace('_', ' ') if make else 'missing file'}"
    refused(case, cli(capsys, *extract_args(base["tree"], base["cache"], ckpt)), str(ckpt))
    assert digests(base["cache"]) == before


# ------------------------------------------------------------------ caches


def _match(capsys, cache, results, *more):
    metric = more[0] if more else "fpr"
    untrained = ("--untrained-foreground",) if metric == "fpr" else ()  # the fixture's network is random
    return cli(capsys, "match", "--metric", metric, *untrained, "--cache-dir", cache, "--results-dir", results, *more[1:])


def test_truncated_cache(base, tmp_path, capsys):
    cache = copy_cache(base, tmp_path)
    cache_file = cache / "partial_reid" / base["cache_file"].name
    data = cache_file.read_bytes()
    cache_file.write_bytes(data[: len(data) // 2])
    results = Path(shutil.copytree(base["results"], tmp_path / "results"))
    before = digests(results)
    refused("cache: truncated file, match", _match(capsys, cache, results), str(cache_file))
    refused("cache: truncated file, extract", cli(capsys, *extract_args(base["tree"], cache, base["ckpt"])), str(cache_file))
    assert digests(results) == before


def test_foreign_file_in_the_cache_folder(base, tmp_path, capsys):
    folder = tmp_path / "cache" / "partial_reid"
    folder.mkdir(parents=True)
    with h5py.File(folder / "0123456789abcdef.h5", "w") as f:
        f["x"] = np.arange(3)
    refused("cache: foreign HDF5 file", _match(capsys, tmp_path / "cache", tmp_path / "results"), str(folder / "0123456789abcdef.h5"))
    assert not (tmp_path / "results").exists()


def test_cache_of_another_dataset(base, tmp_path, capsys):
    folder = tmp_path / "cache" / "partial_ilids"
    folder.mkdir(parents=True)
    shutil.copyfile(base["cache_file"], folder / base["cache_file"].name)
    refused("cache: Partial-REID cache under partial_ilids/", _match(capsys, tmp_path / "cache", tmp_path / "results", "fpr", "--dataset", "partial_ilids"),
            "partial_reid", "partial_ilids")
    assert not (tmp_path / "results").exists()


def test_checkpoint_giving_nan_features_is_refused_at_extraction(base, tmp_path, capsys):
    payload = torch.load(base["ckpt"], weights_only=False)
    payload["state_dict"]["backbone.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    line = refused("checkpoint: a NaN weight (NaN features)", cli(capsys, *extract_args(base["tree"], tmp_path / "cache", tmp_path / "nan.pt")),
                   str(tmp_path / "nan.pt"), "NaN")
    assert "partial_body_images/001_01.png" in line
    for cache_file in (tmp_path / "cache").rglob("*.h5"):  # nothing of the failed batch is committed
        with h5py.File(cache_file, "r") as f:
            assert all(int(f[s].attrs["num_written"]) == 0 for s in f if s in ("query", "gallery"))


@pytest.mark.parametrize("value", [np.nan, 0.0], ids=["nan", "zero"])
@pytest.mark.parametrize("metric", ["fpr", "cosine", "euclidean"])
def test_nan_or_zero_features_in_the_cache(base, tmp_path, capsys, value, metric):
    cache = tmp_path / "cache"
    cache_file = cache / "partial_reid" / base["cache_file"].name
    cache_file.parent.mkdir(parents=True)
    shutil.copyfile(base["cache_file"], cache_file)
    with h5py.File(cache_file, "r+") as f:  # features altered in the file itself (no stored matrix to reuse)
        del f["distances"]
        f["gallery"]["local"][0:3] = value
        f["gallery"]["global"][0] = value
    case = f"cache: {'NaN' if value != value else 'zero'} features, match --metric {metric}"
    if value == 0.0 and metric == "euclidean":  # a zero vector has a well-defined Euclidean distance
        accepted(case, _match(capsys, cache, tmp_path / "results", metric))
        return
    refused(case, _match(capsys, cache, tmp_path / "results", metric), str(cache_file))
    assert not list((tmp_path / "results").glob("*.json"))


def test_query_without_a_gallery_match_is_counted(base, tmp_path, capsys):
    tree = copy_tree(base, tmp_path)
    for p in (tree / "whole_body_images").glob("006_*.png"):
        p.unlink()  # person 6 is only among the probes
    assert main(["extract", *DATASET, "--root", str(tree), "--checkpoint", str(base["ckpt"]), "--cache-dir", str(tmp_path / "c")]) == 0
    line = accepted("query without a gallery match", _match(capsys, tmp_path / "c", tmp_path / "r"))
    assert "(10/12 queries, 10 gallery" in line


# ------------------------------------------------------------------ options and output folders


def test_output_folder_under_a_file_or_missing(base, tmp_path, capsys):
    afile = tmp_path / "plain-file"
    afile.write_text("x")
    refused("option: --results-dir under a file", _match(capsys, base["cache"], afile / "results"), "--results-dir", str(afile))
    refused("option: --cache-dir under a file", cli(capsys, *extract_args(base["tree"], afile / "cache", base["ckpt"])), "--cache-dir", str(afile))
    line = accepted("option: --results-dir missing (created)", _match(capsys, base["cache"], tmp_path / "new" / "results"))
    assert str(tmp_path / "new" / "results") in line


@pytest.mark.parametrize(
    "args, option",
    [
        (("match", "--metric", "fpr", "--untrained-foreground", "--beta", "inf"), "--beta"),
        (("match", "--metric", "fpr", "--untrained-foreground", "--beta", "nan"), "--beta"),
        (("match", "--metric", "fpr", "--untrained-foreground", "--beta", "-1"), "--beta"),
        (("extract", "--batch-size", "0"), "--batch-size"),
        (("extract", "--splits", "query,holdout"), "--splits"),
        # values beyond what the code can hold: refused where parsed, before anything is computed
        (("match", "--metric", "euclidean", "--rerank", "--rerank-k1", "100000000000000000000"), "--rerank-k1"),
        (("match", "--metric", "fpr", "--untrained-foreground", "--memory-budget", "1e30"), "--memory-budget"),
        (("match", "--metric", "fpr", "--untrained-foreground", "--resamples", "100000000"), "--resamples"),
        (("match", "--metric", "fpr", "--untrained-foreground", "--workers", "100000"), "--workers"),
    ],
    ids=["beta-inf", "beta-nan", "beta-negative", "batch-size-0", "unknown-split", "rerank-k1-huge", "memory-budget-huge",
         "resamples-huge", "workers-beyond-cores"],
)
def test_bad_option_values(base, tmp_path, capsys, args, option):
    more = ("--dataset", "partial_reid", "--root", base["tree"], "--checkpoint", base["ckpt"], "--allow-mismatch") if args[0] == "extract" else ()
    results = Path(shutil.copytree(base["results"], tmp_path / "results"))
    before = digests(base["cache"], results)
    refused(f"option: {' '.join(args[1:])}", cli(capsys, *args, *more, "--cache-dir", base["cache"], *(("--results-dir", results) if args[0] == "match" else ())), option)
    assert digests(base["cache"], results) == before


# ------------------------------------------------------------------ a small tmpfs: full and read-only


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        if not _mount_tmpfs(folder, options):
            pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_disk_full_stops_cleanly_keeps_committed_batches_and_resumes(base, tmp_path, capsys, tmpfs):
    full = tmpfs("full", "size=3m")
    args = ("extract", *DATASET, "--root", base["tree"], "--checkpoint", base["ckpt"], "--cache-dir", full, "--batch-size", "4")
    cache_file = full / "partial_reid" / base["cache_file"].name
    first = refused("disk full (3 MiB tmpfs as --cache-dir)", cli(capsys, *args), str(cache_file), "disk full")
    query = read_split(cache_file, "query")  # the batches committed before the disk filled are intact
    reference = read_split(base["cache_file"], "query")
    assert query.paths == reference.paths and np.array_equal(query.global_features, reference.global_features)
    with h5py.File(cache_file, "r") as f:
        committed = dict(f["gallery"].attrs)
    again = refused("disk full, rerun on the same full disk", cli(capsys, *args), str(cache_file), "disk full")
    assert again == first
    with h5py.File(cache_file, "r") as f:
        assert dict(f["gallery"].attrs) == committed
    assert np.array_equal(read_split(cache_file, "query").global_features, query.global_features)
    subprocess.run(["mount", "-o", "remount,size=16m", str(full)], check=True)
    accepted("disk full, rerun after space was freed", cli(capsys, *args))
    gallery, reference = read_split(cache_file, "gallery"), read_split(base["cache_file"], "gallery")
    assert gallery.paths == reference.paths
    np.testing.assert_allclose(gallery.global_features, reference.global_features, rtol=1e-5, atol=1e-6)


def test_read_only_output_folders(base, tmp_path, capsys, tmpfs):
    ro = tmpfs("ro", "ro,size=1m")
    refused("read-only --cache-dir", cli(capsys, *extract_args(base["tree"], ro / "cache", base["ckpt"])), str(ro / "cache"), "--cache-dir")
    results = Path(shutil.copytree(base["results"], tmp_path / "results"))
    before = digests(base["cache"], results)
    refused("read-only --results-dir", _match(capsys, base["cache"], ro / "results", "euclidean"), str(ro / "results"))
    assert digests(base["cache"], results) == before


# ------------------------------------------------------------------ two extractions of one cache


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_second_extraction_and_match_while_one_is_writing(base, tmp_path, capsys):
    cache = tmp_path / "cache"
    script = Path(sys.executable).with_name("reid-eval")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from reid_eval_cli.main import main; sys.exit(main())"]
    # the first extraction stops itself (SIGSTOP) mid-way, holding the writer lock, after writing its 2nd batch
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REID_EVAL_TEST_KILL_AFTER_BATCHES": "2:STOP"}
    first = subprocess.Popen([*command, *map(str, extract_args(base["tree"], cache, base["ckpt"]))],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while first.poll() is None and not _stopped(first.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None and _stopped(first.pid), first.communicate()
        cache_file = cache / "partial_reid" / base["cache_file"].name
        busy = f"another extraction (pid {first.pid}) is writing feature cache {cache_file}"
        assert busy in refused("two extractions of one cache", cli(capsys, *extract_args(base["tree"], cache, base["ckpt"])))
        assert busy in refused("match while an extraction writes the cache", _match(capsys, cache, tmp_path / "results"))
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
    accepted("match after the extraction finished", _match(capsys, cache, tmp_path / "results"))
    assert len(read_split(cache_file, "gallery").paths) == 12
