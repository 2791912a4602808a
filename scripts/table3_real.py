"""Table 3 rows from a really trained network on the paper's own test sets.

Runs the whole chain on the released Partial-REID and Partial-iLIDS (and,
with ``--variants``, their uncropped-probe variants): converts torchreid's
Market-1501 OSNet, extracts, matches the Baseline (global feature, euclidean
and cosine), DSR and — for every ``--fpr-checkpoint`` whose foreground
generator was trained — FPR, all with the paper's AP flavour and
identity-bootstrap intervals; prints R1 / R3 / mAP, the paired FPR − DSR
difference of each FPR model, and writes the report (Tables 3 and 4 with the
paper's rows beside these) under ``--workdir``.

    python scripts/table3_real.py --data-root ../shared/data \\
        --weights ../shared/weights/osnet_x0_25_market1501.pth --workdir table3-run \\
        [--fpr-checkpoint runs/fg/model.pt ...]

Each FPR checkpoint must have the converted network's trunk (for example one
trained with ``reid-eval train --init osnet.pt --freeze-trunk``); its own
extraction and cache are used, so its DSR and Baseline rows are printed too.
Everything is resumable: a rerun reuses finished caches and matrices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reid_eval.errors import ReidEvalError
from reid_eval.experiments import MatchParams, match_cache, select_cache
from reid_eval.experiments.compare import compare_results
from reid_eval.experiments.foreground import check_foreground
from reid_eval.experiments.record import PAPER_AP
from reid_eval.features import extract_dataset
from reid_eval.model import convert_checkpoint, file_sha256, save_checkpoint

#: dataset -> its folder under the data root.
SETS = {"partial_reid": "Partial-REID_Dataset", "partial_ilids": "Partial_iLIDS"}
VARIANTS = {"partial_reid_occluded": "Partial-REID_Dataset", "partial_ilids_nocrop": "Partial_iLIDS"}
MODEL_NAME = "OSNet x0.25, Market-1501, torchreid"
BASELINES = (("Baseline (global, euclidean)", "euclidean"), ("Baseline (global, cosine)", "cosine"), ("DSR", "dsr"))


def _cell(value: float, ci: list[float] | None) -> str:
    text = f"{100 * value:5.1f}"
    return text + (f" [{100 * ci[0]:4.1f}, {100 * ci[1]:4.1f}]" if ci else "")


def _row(dataset: str, model: str, method: str, result, width: int) -> str:
    intervals = result.intervals or {}
    cmc_ci = intervals.get("cmc_ci") or [None] * 3
    return (f"{dataset:22s} {model:{width}s} {method:30s} R1 {_cell(result.cmc[0], cmc_ci[0])}  "
            f"R3 {_cell(result.cmc[2], cmc_ci[2])}  mAP {_cell(result.mAP, intervals.get('mAP_ci'))}")


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    converted = work / "osnet_market1501.pt"
    if not converted.exists():
        model, config, extra = convert_checkpoint("torchreid", args.weights, name=MODEL_NAME)
        save_checkpoint(converted, model, config, extra=extra)
    models = [(MODEL_NAME, converted)] + [(f"{MODEL_NAME} + {Path(c).parent.name or Path(c).stem} foreground", Path(c))
                                          for c in args.fpr_checkpoint]
    sets = {**SETS, **(VARIANTS if args.variants else {})}
    cache_dir, results_dir = work / "cache", work / "results"
    width = max(len(name) for name, _ in models)
    print(f"{'dataset':22s} {'model':{width}s} {'method':30s} values in % [95% identity-bootstrap interval], AP {PAPER_AP}")
    for dataset, folder in sets.items():
        for name, ckpt in models:
            extract_dataset(dataset, Path(args.data_root) / folder, ckpt, cache_dir, device=args.device,
                            batch_size=args.batch_size)
            cache = select_cache(cache_dir, dataset, file_sha256(ckpt))
            files = {}
            methods = list(BASELINES) if ckpt == converted or args.all_rows else [("DSR", "dsr")]
            if ckpt != converted:
                check_foreground(cache, "fpr", allow_untrained=False)
                methods.append(("FPR", "fpr"))
            for label, metric in methods:
                params = MatchParams(metric=metric, ap=PAPER_AP, resamples=args.resamples).validate()
                out = match_cache(cache, params, results_dir, dataset=dataset)
                files[metric] = out.results_file
                print(_row(dataset, name, label, out.result, width), flush=True)
            if "fpr" in files:
                c = compare_results(files["fpr"], files["dsr"], resamples=args.resamples)
                d = c.difference
                print(f"{'':22s} {'':{width}s} {'FPR - DSR (paired)':30s} R1 {100 * d.point[0]:+5.1f} "
                      f"[{100 * d.low[0]:+.1f}, {100 * d.high[0]:+.1f}]  mAP {100 * d.point[1]:+5.1f} "
                      f"[{100 * d.low[1]:+.1f}, {100 * d.high[1]:+.1f}]", flush=True)
    from reid_eval.report import build_report

    build_report(results_dir, work / "report", cache_dir, figures=not args.no_figures)
    print(f"report -> {work / 'report'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="folder holding Partial-REID_Dataset/ and Partial_iLIDS/")
    parser.add_argument("--weights", required=True, help="torchreid's osnet_x0_25 Market-1501 state dict")
    parser.add_argument("--workdir", default="table3-run", help="caches, results and report [default: ./table3-run]")
    parser.add_argument("--fpr-checkpoint", action="append", default=[], metavar="FILE",
                        help="a checkpoint with a trained foreground generator (repeatable)")
    parser.add_argument("--variants", action="store_true", help="also the uncropped-probe variants of both sets")
    parser.add_argument("--all-rows", action="store_true", help="Baseline rows for every FPR checkpoint too")
    parser.add_argument("--resamples", type=int, default=1000, help="identity-bootstrap resamples [default: 1000]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ReidEvalError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
