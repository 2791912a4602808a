"""`reid-eval datasets` and `reid-eval manifest`: find datasets on disk and write their manifests."""

from __future__ import annotations

from pathlib import Path

import click

from .options import Folder, data_root_option
from reid_eval.datasets import (
    ScannedDataset,
    check_data_root,
    count_mismatches,
    describe_mismatches,
    find_dataset_root,
    find_split_folder,
    get_spec,
    known_datasets,
    locate_dataset,
    manifest_csv,
    scan_dataset,
    split_counts,
    validate_counts,
    write_manifest,
)

DEFAULT_MANIFEST_DIR = Path("manifests")


def _table(rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Rows as aligned text columns; columns whose index is in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _status(name: str, data_root: Path) -> tuple[str, str]:
    found = locate_dataset(name, data_root)
    if found is None:
        return "not found", "-"
    path, matched = found
    spec = get_spec(name)
    missing = [split.name for split in spec.splits if find_split_folder(split, path) is None]
    if missing:
        return f"incomplete: no {', '.join(missing)} folder", matched
    return "found", matched


@click.command("datasets")
@data_root_option
def datasets_command(data_root: Path) -> None:
    """List the known datasets and whether each is found under the data root.

    Each dataset is looked for under the data root by the folder names its
    spec accepts (data_manifests/<name>.toml), first match wins.
    """
    data_root = check_data_root(data_root)
    click.echo(f"data root: {data_root.resolve()}")
    rows = [["dataset", "kind", "status", "folder", "looked for"]]
    for name in known_datasets():
        spec = get_spec(name)
        status, folder = _status(name, data_root)
        rows.append([name, spec.kind, status, folder, ", ".join(spec.roots)])
    for line in _table(rows):
        click.echo(line)


def _summary_lines(scan: ScannedDataset, mismatched: set[str]) -> list[str]:
    spec = scan.spec
    counts = split_counts(spec, scan.table)
    published = spec.published_counts
    rows = [["split", "folder", "images", "identities", "published"]]
    for split in spec.split_names:
        have = counts[split]
        if split in published:
            images, identities = published[split]
            expected = f"{images} / {identities}" + ("  MISMATCH" if split in mismatched else "")
        else:
            expected = "-"
        rows.append([split, scan.split_folders[split], str(have.images), str(have.identities), expected])
    lines = [f"{spec.name} ({spec.title}) at {scan.root.resolve()}", *_table(rows, right=frozenset({2, 3}))]
    for split in spec.split_names:
        notes = []
        if counts[split].distractor_images:
            pids = ", ".join(str(p) for p in sorted(spec.distractor_pids))
            notes.append(f"{counts[split].distractor_images} distractor images (pid {pids}) kept")
        if scan.junk_images.get(split):
            pids = ", ".join(str(p) for p in sorted(spec.junk_pids))
            notes.append(f"{scan.junk_images[split]} junk images (pid {pids}) left out")
        if notes:
            lines.append(f"{split}: {'; '.join(notes)}")
    if not published:
        lines.append("no published counts for this dataset: count validation skipped")
    return lines


@click.command("manifest")
@click.option("--dataset", "name", required=True, metavar="NAME", help="Dataset name (see `reid-eval datasets`).")
@click.option(
    "--root",
    type=Folder(),
    default=None,
    help="The dataset's own folder. Default: the first accepted folder name found under the data root.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    help="CSV file to write; '-' writes to stdout.  [default: ./manifests/NAME.csv]",
)
@click.option(
    "--allow-mismatch", is_flag=True, help="Write the manifest even when counts differ from the published ones."
)
@data_root_option
def manifest_command(name: str, root: Path | None, output: Path | None, allow_mismatch: bool, data_root: Path) -> None:
    """Scan a dataset, validate it against its published counts, write the manifest CSV.

    The CSV has columns path (relative to the dataset root), pid, camid, split,
    ordered by split (train, query, gallery) and then path. Junk pids are left
    out, distractor pids kept.

    The CSV is a report of what was found: extract, match and train do not read
    it, they scan the dataset folder again with the same code (so they always
    agree with it).
    """
    spec = get_spec(name)
    if root is None:
        root = find_dataset_root(spec.name, data_root)
    scan = scan_dataset(spec.name, root)
    mismatches = count_mismatches(spec, scan.table)
    to_stdout = output is not None and str(output) == "-"
    # With the CSV on stdout, the human-readable summary must not mix into it.
    for line in _summary_lines(scan, {m.split for m in mismatches}):
        click.echo(line, err=to_stdout)
    if mismatches:
        if not allow_mismatch:
            validate_counts(spec, scan.table)
        click.echo(f"Warning: {describe_mismatches(spec, mismatches)}", err=True)
    if to_stdout:
        click.echo(manifest_csv(scan.table), nl=False)
        return
    target = output if output is not None else DEFAULT_MANIFEST_DIR / f"{spec.name}.csv"
    write_manifest(scan.table, target)
    click.echo(f"wrote {target} ({len(scan.table)} images)")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (datasets_command, manifest_command)
