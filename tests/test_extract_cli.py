"""`reid-eval extract` on the command line: progress lines off a terminal, a rerun that says it did nothing."""

from __future__ import annotations

from reid_eval_cli.main import main
from test_extract_cache import make_partial_reid, small_checkpoint


def test_progress_lines_without_a_terminal_and_a_rerun_that_says_nothing_was_done(tmp_path, capsys):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    ckpt = small_checkpoint(tmp_path / "small.pt")
    args = ["extract", "--dataset", "partial_reid", "--root", str(tree), "--checkpoint", str(ckpt),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "3", "--allow-mismatch", "--threads", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()  # capsys: stderr is not a terminal, as in a log file or CI
    lines = err.splitlines()
    for split in ("query", "gallery"):
        mine = [line for line in lines if line.startswith(f"extract {split}: ")]
        assert mine[0].startswith(f"extract {split}: 0/12") and mine[-1].startswith(f"extract {split}: 12/12")
        assert len(mine) <= 11 and "img/s" in mine[-1]  # a line per tenth at most, with the rate
    assert "nothing extracted" not in out
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "images, already complete: nothing extracted -> " in out
    assert "img/s" not in err
