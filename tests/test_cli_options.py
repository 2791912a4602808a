"""Options across commands: no option without effect, no default that refuses a valid option, clean --help."""

from __future__ import annotations

import pytest

from reid_eval_cli.main import main
from reid_eval.training import TrainConfig
from reid_eval.training.schedule import default_warmup_epochs


@pytest.mark.parametrize("extra, named, switch", [
    (["--rerank-lambda", "2"], "--rerank-lambda", "--rerank"),
    (["--rerank-k1", "5", "--rerank-aux", "global"], "--rerank-aux, --rerank-k1", "--rerank"),
    (["--shortlist-fill", "-3"], "--shortlist-fill", "--shortlist"),
    (["--shortlist-metric", "cosine"], "--shortlist-metric", "--shortlist"),
    (["--fuse-global", "cosine"], "--fuse-global", "--fuse"),
])
def test_an_option_without_effect_is_refused_naming_its_switch(tmp_path, capsys, extra, named, switch):
    assert main(["match", "--metric", "fpr", "--untrained-foreground", *extra, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"Error: {named} act") and f"only with {switch};" in err


def test_an_unknown_dataset_is_named_with_the_known_ones(tmp_path, capsys):
    assert main(["match", "--metric", "fpr", "--untrained-foreground", "--dataset", "nonsense", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: unknown dataset 'nonsense' (--dataset); known datasets: ") and "partial_reid" in err


def test_the_warmup_default_never_refuses_a_valid_epoch_count():
    assert [default_warmup_epochs(n) for n in (1, 2, 12, 20, 200)] == [0, 1, 6, 10, 10]
    for epochs in (1, 3, 200):
        cfg = TrainConfig(dataset="synthetic_occluded", root=".", out_dir=".", epochs=epochs)
        cfg.schedule.check(epochs)  # the default warmup fits the run
    with pytest.raises(ValueError, match="--warmup-epochs 1 leaves nothing of --epochs 1"):
        TrainConfig(dataset="synthetic_occluded", root=".", out_dir=".", epochs=1, warmup_epochs=1).schedule.check(1)


@pytest.mark.parametrize("command", [["match"], ["train"], ["extract"], ["compare"], ["demo"], ["report"],
                                     ["checkpoint", "init"], ["checkpoint", "convert"]])
def test_help_shows_no_empty_range_and_each_default_once(command, capsys):
    assert main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the help's own line wrapping undone
    assert "None" not in text  # e.g. "x<=None" after an unbounded option
    assert text.count("[default: random]") == 0  # train --init states its default in its own words


def test_one_spelling_across_commands(capsys):
    for command, wanted in ((["compare"], "--ci-seed"), (["match"], "--ci-seed"), (["checkpoint", "init"], "--pyramid-stride"),
                            (["train"], "--pyramid-stride"), (["extract"], "--threads")):
        assert main([*command, "--help"]) == 0
        assert wanted in capsys.readouterr().out, command
    assert main(["extract", "--help"]) == 0
    assert "REID_EVAL_CHECKPOINT; required]" in " ".join(capsys.readouterr().out.split())
    assert main(["train", "--dataset", "synthetic_occluded", "--backbone", "resnet5"]) == 2  # a choice, as in checkpoint
    assert "'resnet5' is not one of" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["checkpoint", "init", "--out", "x.pt", "--input-size"], ["train", "--dataset",
                                      "synthetic_occluded", "--input-size"], ["synthesize", "--size"]])
def test_an_image_size_is_written_heightxwidth_everywhere(command, capsys):
    for bad in ("384", "384x", "0x128", "384 128"):
        assert main([*command, bad]) == 2
        err = capsys.readouterr().err
        assert f"{bad!r} is not HEIGHTxWIDTH in pixels (e.g. 384x128)" in err, err
