"""The match run as a type: :class:`MatchParams` (what was asked) and :class:`MatchResult` (what came out).

This module is the one home of the contract between `match` (which writes
results), `report` and `demo` (which read them): option choices and defaults,
validation, the distance name in the cache and the results file name, and the
JSON layout of a results file (docs/DESIGN.md, "Results files").

Identity and provenance
-----------------------
Every :class:`MatchParams` field says, in its ``metadata["role"]``, what it is:

* ``"distance"`` — identity of the distance matrix: it changes the matrix, so
  it is part of the distance name (``distances/<name>`` in the cache) and of
  the results file name: ``beta``, ``shortlist``, ``shortlist_metric``,
  ``shortlist_fill``, ``fuse``, ``rerank`` and its ``rerank_k1``,
  ``rerank_k2``, ``rerank_lambda``; ``metric`` and ``fuse_global`` form the
  name's label (``fpr``, ``fpr+euclidean``).
* ``"results"`` — identity of the scores only (one matrix, several results
  files): ``ap`` (the AP flavour) and ``checkpoint_sha256`` (its first
  :data:`CHECKPOINT_PREFIX` hex digits).
* ``"provenance"`` — recorded, never named, because it does not change the
  matrix or the scores: ``backend``, ``max_rank``, ``resamples``, ``ci_seed``
  (how the bootstrap intervals beside the scores were drawn).

``MatchParams.field_names(role)`` lists them; this list is a summary of the
``_field`` declarations below, which are the definition.

A name part is ``__<tag><value>`` and is left out when the value is the
field's ``omit`` value (the paper's setting or "not used"), so the paper's
run keeps the short name ``<dataset>__fpr__ckpt-<sha8>.json``. Names are only
ever derived from a :class:`MatchParams`, never parsed back.

Adding a field: give it a default that reproduces today's behaviour, a
``_field(...)`` with its role, ``tag``/``omit`` when it is identity, its
``option`` (the CLI flag, for error messages) and a check in :meth:`MatchParams.validate`.
Old results files without the field read back with the default.

:class:`MatchResult` is one results file: scores plus its :class:`MatchParams`
and a free ``provenance`` mapping (cache file, model settings, timings, engine
statistics such as the tile plan and the refined share) that never affects
names, plus optional result fields (bootstrap intervals, verification, the
per-query records file, the λ-tuning record). ``to_json``/``from_json`` keep the
results file layout of docs/DESIGN.md: the twelve top-level keys, and in
``params`` the :class:`MatchParams` fields, the provenance entries and the
``distance_name``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid_eval.atomic import write_text_atomically
from reid_eval.digest import file_sha256
from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import AP_FLAVOURS, check_rerank_params
from reid_eval.evaluation.ranking import averages_over_all
from reid_eval.evaluation.bootstrap import DEFAULT_RESAMPLES, MAX_RESAMPLES
from reid_eval.evaluation.rerank import DEFAULT_K1 as RERANK_K1
from reid_eval.evaluation.rerank import DEFAULT_K2 as RERANK_K2
from reid_eval.evaluation.rerank import DEFAULT_LAMBDA as RERANK_LAMBDA
from reid_eval.matching import DEFAULT_BETA
from reid_eval.matching.kernel.backend import BACKENDS

#: β of the paper (§4.1); defined once, in reid_eval.matching.definition.
PAPER_BETA: float = DEFAULT_BETA
#: The AP flavour of the paper's tables: the official Market-1501 code's (evaluation.ranking docstring).
PAPER_AP: str = "market1501"
#: Every metric `match` computes, in display order: global Baseline rows first, then DSR and FPR.
MATCH_METRICS: tuple[str, ...] = ("euclidean", "cosine", "dsr", "fpr")
#: The metrics on global features (the others reconstruct pyramid features).
GLOBAL_METRICS: tuple[str, ...] = ("euclidean", "cosine")
#: Display names of the metrics (tables, figures, demo).
METRIC_NAMES: dict[str, str] = {"euclidean": "Baseline", "cosine": "Cosine baseline", "dsr": "DSR", "fpr": "FPR"}
#: Where k-reciprocal re-ranking takes its query–query and gallery–gallery distances:
#: "same" = the run's own metric (for FPR: the gallery–gallery FPR matrix, cached), "global" = the
#: global-feature euclidean distance (cheap; see reid_eval.experiments.reranking for the trade-off).
RERANK_AUX: tuple[str, ...] = ("same", "global")
#: Hex digits of the checkpoint's SHA-256 in a results file name.
CHECKPOINT_PREFIX = 8
#: The top-level keys of a results file (docs/DESIGN.md, "Results files").
RESULT_KEYS: tuple[str, ...] = (
    "dataset",
    "metric",
    "cmc",
    "mAP",
    "mINP",
    "ap_flavour",
    "num_query",
    "num_valid_query",
    "num_gallery",
    "params",
    "checkpoint_sha256",
    "created",
)

#: Optional top-level keys of the intervals (reid_eval.evaluation.bootstrap.interval_record).
INTERVAL_KEYS: tuple[str, ...] = ("cmc_ci", "mAP_ci", "mINP_ci", "bootstrap")
#: Every optional top-level key a results file may have beside RESULT_KEYS. ``averaged_over`` and
#: ``query_records_sha256`` are always written now; a file without ``averaged_over`` predates the official
#: averages (its ``market1501`` is read as ``market1501-valid``), one without the digest is read unchecked.
OPTIONAL_RESULT_KEYS: tuple[str, ...] = (
    *INTERVAL_KEYS, "verification", "query_records", "query_records_sha256", "fuse_tuning", "averaged_over")


def _field(default: Any, role: str, option: str | None = None, tag: str | None = None, omit: Any = None,
           spell: Mapping[Any, str] | None = None) -> Any:
    """A MatchParams field; see the module docstring for ``role``, ``tag``, ``omit`` and ``spell``."""
    return field(default=default, metadata={"role": role, "option": option, "tag": tag, "omit": omit, "spell": spell or {}})


#: How the AP flavours are spelled in results file names. The official flavour's averages over all
#: queries replaced a valid-only average that was written as ``__ap-market1501``: its files take a name
#: no earlier file has, so an old file is never taken for an official one (nor replaced by one).
AP_NAME_PARTS: dict[str, str] = {"market1501": "market1501-official"}
#: ``averaged_over`` of a results file: the queries its averages divide by (reid_eval.evaluation.ranking).
AVERAGED_OVER: tuple[str, ...] = ("all", "valid")
#: Upper bound of every count option (shortlist K, max rank, seeds): what every array index and HDF5 attribute holds.
MAX_COUNT: int = 2**31 - 1


def _num(value: float) -> str:
    """Short form of a number in a name ('0.1', '1e-05'), exact enough that two values never share it."""
    short = format(float(value), "g")
    return short if float(short) == float(value) else repr(float(value))


def _count(value: Any, option: str, low: int, high: int = MAX_COUNT) -> int:
    """``value`` when it is an integer in [low, high]; ValueError naming ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{option} must be an integer in [{low}, {high}], got {value}")
    return value


def _finite_number(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{option} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{option} must be a finite number, got {value}")
    return float(value)


@dataclass(frozen=True)
class MatchParams:
    """Everything that decides one match run's matrix and scores (identity), plus provenance.

    Construct with the user's values; fields that do not apply to the metric
    are normalised on construction (``beta`` is None for the global metrics,
    ``shortlist_metric`` None without a shortlist, ``fuse_global`` None
    without ``fuse``), so equal runs compare and name equal. Call
    :meth:`validate` before use: it raises ValueError naming the option.
    """

    metric: str = _field("fpr", "distance", "--metric")
    beta: float | None = _field(PAPER_BETA, "distance", "--beta", tag="beta", omit=PAPER_BETA)
    shortlist: int | None = _field(None, "distance", "--shortlist", tag="shortlist")
    shortlist_metric: str | None = _field("euclidean", "distance", "--shortlist-metric", tag="shortlist-by-", omit="euclidean")
    fuse: float | None = _field(None, "distance", "--fuse", tag="fuse")
    fuse_global: str | None = _field("euclidean", "distance", "--fuse-global")  # in the label: fpr+<fuse_global>
    # Outside a shortlist: None = global-rank order behind the shortlist; a number = that constant distance
    # (fast-reid's PartialReID code: 100), which makes shortlist + fuse a weighted sum of distances.
    shortlist_fill: float | None = _field(None, "distance", "--shortlist-fill", tag="fill")
    # k-reciprocal re-ranking (reid_eval.evaluation.rerank): aux "same" or "global", None = off.
    rerank: str | None = _field(None, "distance", "--rerank-aux", tag="rerank-")
    rerank_k1: int | None = _field(RERANK_K1, "distance", "--rerank-k1", tag="k1-", omit=RERANK_K1)
    rerank_k2: int | None = _field(RERANK_K2, "distance", "--rerank-k2", tag="k2-", omit=RERANK_K2)
    rerank_lambda: float | None = _field(RERANK_LAMBDA, "distance", "--rerank-lambda", tag="rr-lambda", omit=RERANK_LAMBDA)
    ap: str = _field("standard", "results", "--ap", tag="ap-", omit="standard", spell=AP_NAME_PARTS)
    checkpoint_sha256: str = _field("", "results", "--checkpoint", tag="ckpt-", omit="")
    backend: str = _field("auto", "provenance", "--backend")
    max_rank: int = _field(50, "provenance", "--max-rank")
    # bootstrap intervals (reid_eval.evaluation.bootstrap): recorded with the intervals, 0 resamples = none
    resamples: int = _field(DEFAULT_RESAMPLES, "provenance", "--resamples")
    ci_seed: int = _field(0, "provenance", "--ci-seed")

    def __post_init__(self) -> None:
        reconstructs = self.metric not in GLOBAL_METRICS
        if not reconstructs:
            object.__setattr__(self, "beta", None)
        elif self.beta is None:
            object.__setattr__(self, "beta", PAPER_BETA)
        if self.shortlist is None:
            object.__setattr__(self, "shortlist_metric", None)
        elif self.shortlist_metric is None:
            object.__setattr__(self, "shortlist_metric", "euclidean")
        if self.fuse is None:
            object.__setattr__(self, "fuse_global", None)
        elif self.fuse_global is None:
            object.__setattr__(self, "fuse_global", "euclidean")
        if self.shortlist is None:
            object.__setattr__(self, "shortlist_fill", None)
        for name, default in (("rerank_k1", RERANK_K1), ("rerank_k2", RERANK_K2), ("rerank_lambda", RERANK_LAMBDA)):
            if self.rerank is None:
                object.__setattr__(self, name, None)
            elif getattr(self, name) is None:
                object.__setattr__(self, name, default)

    # ------------------------------------------------------------ checks

    def validate(self) -> "MatchParams":
        """Return self, or raise ValueError naming the option that is wrong (NaN, infinity, ≤ 0, unknown choice, ...)."""
        if self.metric not in MATCH_METRICS:
            raise ValueError(f"--metric must be one of {', '.join(MATCH_METRICS)}, got {self.metric!r}")
        if self.beta is not None:
            beta = _finite_number(self.beta, "--beta")
            if not beta > 0:
                raise ValueError(f"--beta must be positive, got {self.beta}")
        if self.shortlist is not None:
            if self.metric in GLOBAL_METRICS:
                raise ValueError(f"--shortlist re-ranks with fpr or dsr; it does nothing for --metric {self.metric}")
            _count(self.shortlist, "--shortlist", 1)
            if self.shortlist_metric not in GLOBAL_METRICS:
                raise ValueError(f"--shortlist-metric must be one of {', '.join(GLOBAL_METRICS)}, got {self.shortlist_metric!r}")
        if self.fuse is not None:
            if self.metric in GLOBAL_METRICS:
                raise ValueError(f"--fuse combines a global distance with fpr or dsr; --metric {self.metric} is already global")
            fuse = _finite_number(self.fuse, "--fuse")
            if not 0.0 <= fuse <= 1.0:
                raise ValueError(f"--fuse must be in [0, 1], got {self.fuse}")
            if self.fuse_global not in GLOBAL_METRICS:
                raise ValueError(f"--fuse-global must be one of {', '.join(GLOBAL_METRICS)}, got {self.fuse_global!r}")
            if self.shortlist is not None and self.shortlist_fill is None:
                # outside the shortlist the engine returns ranks, not distances: a weighted sum would mix units
                raise ValueError("--shortlist and --fuse cannot be combined without --shortlist-fill")
        if self.shortlist_fill is not None:
            fill = _finite_number(self.shortlist_fill, "--shortlist-fill")
            if not fill > 0:
                raise ValueError(f"--shortlist-fill must be positive, got {self.shortlist_fill}")
        if self.rerank is not None:
            if self.rerank not in RERANK_AUX:
                raise ValueError(f"--rerank-aux must be one of {', '.join(RERANK_AUX)}, got {self.rerank!r}")
            if isinstance(self.rerank_lambda, bool) or not isinstance(self.rerank_lambda, (int, float)):
                raise ValueError(f"--rerank-lambda must be a number, got {self.rerank_lambda!r}")
            check_rerank_params(self.rerank_k1, self.rerank_k2, self.rerank_lambda)
        _count(self.resamples, "--resamples", 0, MAX_RESAMPLES)
        _count(self.ci_seed, "--ci-seed", 0)
        if self.ap not in AP_FLAVOURS:
            raise ValueError(f"--ap must be one of {', '.join(AP_FLAVOURS)}, got {self.ap!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _count(self.max_rank, "--max-rank", 1)
        sha = self.checkpoint_sha256
        if sha and not (isinstance(sha, str) and all(c in "0123456789abcdef" for c in sha)):
            raise ValueError(f"--checkpoint: its SHA-256 must be lower-case hex, got {sha!r}")
        return self

    # ------------------------------------------------------------ names

    @property
    def label(self) -> str:
        """Metric name in results: ``fpr``, ``dsr``, ``euclidean``, ``cosine``, or ``fpr+euclidean`` when fused."""
        return f"{self.metric}+{self.fuse_global}" if self.fuse is not None else self.metric

    def _parts(self, role: str) -> str:
        parts = []
        for f in dataclasses.fields(self):
            tag = f.metadata.get("tag")
            if f.metadata.get("role") != role or tag is None:
                continue
            value = getattr(self, f.name)
            if value is None or value == f.metadata.get("omit"):
                continue
            if f.name == "checkpoint_sha256":
                value = value[:CHECKPOINT_PREFIX]
            value = f.metadata["spell"].get(value, value)
            parts.append(f"__{tag}{_num(value) if isinstance(value, float) else value}")
        return "".join(parts)

    @property
    def distance_name(self) -> str:
        """``<label>[__beta<β>][__shortlist<K>][__shortlist-by-<metric>][__fuse<λ>]``: the cache's ``distances/<name>``."""
        return self.label + self._parts("distance")

    def results_file_name(self, dataset: str) -> str:
        """``<dataset>__<distance name>[__ap-<flavour>][__ckpt-<sha8>].json``: one file per identity
        (``market1501`` is spelled ``market1501-official``, :data:`AP_NAME_PARTS`)."""
        return f"{dataset}__{self.distance_name}{self._parts('results')}.json"

    def identity(self, role: str = "results") -> tuple:
        """The values that decide the matrix (``role="distance"``) or the matrix and its scores (``"results"``)."""
        roles = ("distance",) if role == "distance" else ("distance", "results")
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("role") in roles)

    # ------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MatchParams":
        """From a results file's ``params`` (or a stored matrix's attributes); unknown keys are ignored, missing ones take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("beta", "fuse", "shortlist_fill", "rerank_lambda"):
            if values.get(key) is not None:
                values[key] = float(values[key])
        for key in ("shortlist", "rerank_k1", "rerank_k2", "resamples", "ci_seed"):
            if values.get(key) is not None:
                values[key] = int(values[key])
        values["checkpoint_sha256"] = str(values.get("checkpoint_sha256") or "")
        return cls(**values)

    @classmethod
    def field_names(cls, role: str | None = None) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if role is None or f.metadata.get("role") == role)


@dataclass(frozen=True)
class MatchResult:
    """One results file: the scores of one (dataset, :class:`MatchParams`) run.

    ``cmc`` float [max_rank] and ``mAP``, ``mINP``: fractions in [0, 1] under
    ``params.ap``. ``provenance``: what is recorded but names nothing (cache
    file, model settings, skipped images, timings, engine statistics).
    """

    dataset: str
    params: MatchParams
    cmc: tuple[float, ...]
    mAP: float
    mINP: float
    num_query: int
    num_valid_query: int
    num_gallery: int
    provenance: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    # Optional result fields (absent from older files): bootstrap intervals
    # (reid_eval.evaluation.bootstrap.interval_record), verification
    # (VerificationResult.as_record), the per-query CSV's file name (beside
    # this file), and the fast-reid preset's λ tuning record.
    intervals: Mapping[str, Any] | None = None
    verification: Mapping[str, Any] | None = None
    query_records: str | None = None
    fuse_tuning: Mapping[str, Any] | None = None
    # SHA-256 of the per-query CSV's bytes, taken by :meth:`write` from the file beside it
    query_records_sha256: str | None = None

    @property
    def metric(self) -> str:
        return self.params.label

    @property
    def checkpoint_sha256(self) -> str:
        return self.params.checkpoint_sha256

    @property
    def file_name(self) -> str:
        return self.params.results_file_name(self.dataset)

    @staticmethod
    def now() -> str:
        return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def to_json(self) -> dict[str, Any]:
        params = {**dict(self.provenance), **self.params.to_json(), "distance_name": self.params.distance_name}
        return {
            "dataset": self.dataset,
            "metric": self.metric,
            "cmc": [float(v) for v in self.cmc],
            "mAP": float(self.mAP),
            "mINP": float(self.mINP),
            "ap_flavour": self.params.ap,
            "num_query": int(self.num_query),
            "num_valid_query": int(self.num_valid_query),
            "num_gallery": int(self.num_gallery),
            "params": params,
            "checkpoint_sha256": self.checkpoint_sha256,
            "created": self.created,
            "averaged_over": "all" if averages_over_all(self.params.ap) else "valid",
            **({} if self.intervals is None else dict(self.intervals)),
            **({} if self.verification is None else {"verification": dict(self.verification)}),
            **({} if self.query_records is None else {"query_records": self.query_records}),
            **({} if self.query_records_sha256 is None else {"query_records_sha256": self.query_records_sha256}),
            **({} if self.fuse_tuning is None else {"fuse_tuning": dict(self.fuse_tuning)}),
        }

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike = "results") -> "MatchResult":
        """Parse one results file's JSON; ReidEvalError naming ``source`` when keys are missing or values impossible."""
        if not isinstance(data, dict):
            raise ReidEvalError(f"{source}: not a results file (not a JSON object)")
        missing = [k for k in RESULT_KEYS if k not in data]
        if missing:
            raise ReidEvalError(f"{source}: not a results file (missing {', '.join(missing)})")
        try:
            raw = dict(data["params"] or {})
            # the file's own metric, AP and checkpoint fields win over an older params dict
            metric = str(data["metric"])
            raw["metric"] = metric.split("+")[0]
            if "+" in metric:
                raw["fuse_global"] = metric.split("+", 1)[1]
                if raw.get("fuse") is None:
                    raise ValueError(f"metric {metric} without params.fuse")
            raw["ap"] = _flavour_of(data)
            raw["checkpoint_sha256"] = str(data["checkpoint_sha256"] or "")
            params = MatchParams.from_json(raw)
            provenance = {k: v for k, v in raw.items() if k not in MatchParams.field_names() and k != "distance_name"}
            result = cls(
                dataset=str(data["dataset"]),
                params=params,
                cmc=tuple(float(v) for v in data["cmc"]),
                mAP=float(data["mAP"]),
                mINP=float(data["mINP"]),
                num_query=int(data["num_query"]),
                num_valid_query=int(data["num_valid_query"]),
                num_gallery=int(data["num_gallery"]),
                provenance=provenance,
                created=str(data["created"]),
                intervals={k: data[k] for k in INTERVAL_KEYS if k in data} or None,
                verification=data.get("verification"),
                query_records=data.get("query_records"),
                fuse_tuning=data.get("fuse_tuning"),
                query_records_sha256=data.get("query_records_sha256"),
            )
        except (TypeError, ValueError) as exc:
            raise ReidEvalError(f"{source}: malformed results file ({exc})") from exc
        _check_not_outdated(data, result.params, source)
        rates = [*result.cmc, result.mAP, result.mINP]
        if not result.cmc or not all(0.0 <= r <= 1.0 for r in rates):
            raise ReidEvalError(f"{source}: cmc, mAP and mINP must be fractions in [0, 1] (is this a percentage?)")
        if any(b < a - 1e-9 for a, b in zip(result.cmc, result.cmc[1:])):
            raise ReidEvalError(f"{source}: cmc must be non-decreasing")
        return result

    def write(self, results_dir: str | os.PathLike) -> Path:
        """Write ``<results_dir>/<file_name>`` atomically (a rerun with identical parameters replaces its own file).

        Written last, after the per-query CSV it names: the JSON records that
        file's SHA-256, which :func:`records_file` checks. A failure (a full
        disk) raises ReidEvalError naming the file and keeps the one there before.
        """
        out = Path(results_dir) / self.file_name
        result = self
        if self.query_records is not None:
            table = out.parent / self.query_records
            try:
                result = dataclasses.replace(self, query_records_sha256=file_sha256(table))
            except OSError as exc:
                raise ReidEvalError(f"cannot read per-query records {table} to record its digest: {exc.strerror or exc}") from None
        text = json.dumps(result.to_json(), indent=2) + "\n"
        return write_text_atomically(out, text, "results file", "`reid-eval match`")

    @classmethod
    def read(cls, path: str | os.PathLike) -> "MatchResult":
        """One results file; ReidEvalError naming it when unreadable or not a results file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReidEvalError(f"{path}: not readable as JSON ({exc})") from exc
        return cls.from_json(data, path)




def records_file(result: MatchResult, results_file: str | os.PathLike) -> Path:
    """The per-query CSV of a results file, checked against the digest the results file recorded.

    ReidEvalError naming both files when the CSV is absent, or is not the one
    the results file was written with (edited, or left by a run whose results
    file could not be written): its numbers would disagree with the JSON's.
    A results file written before the digest was recorded is taken unchecked.
    """
    results_file = Path(results_file)
    if not result.query_records:
        raise ReidEvalError(f"{results_file}: no per-query records (written by an older `reid-eval match`); rerun it")
    table = results_file.parent / result.query_records
    if not table.is_file():
        raise ReidEvalError(f"{results_file}: its per-query records {table} are missing; rerun `reid-eval match`")
    if result.query_records_sha256 is not None:
        try:
            digest = file_sha256(table)
        except OSError as exc:
            raise ReidEvalError(f"{table}: not readable ({exc.strerror or exc})") from None
        if digest != result.query_records_sha256:
            raise ReidEvalError(
                f"{table} is not the per-query table {results_file.name} was written with (its SHA-256 differs: "
                "edited, or left by a `match` that did not finish); rerun `reid-eval match` to write both again")
    return table


class OutdatedResultError(ReidEvalError):
    """A results file whose numbers this version no longer computes under its name (rerun `match` to replace it)."""


def _check_not_outdated(data: Mapping[str, Any], params: MatchParams, source: str | os.PathLike) -> None:
    """Refuse a results file that an earlier version re-ranked with an asymmetric metric's own aux matrices.

    Those read each image's query–query and gallery–gallery distances by row;
    re-ranking now reads them by column, as the authors' release does
    (reid_eval.evaluation.rerank), which changes an FPR or DSR result under
    the same name. Such files predate ``averaged_over``.
    """
    if "averaged_over" not in data and params.rerank == "same" and params.metric not in GLOBAL_METRICS:
        raise OutdatedResultError(
            f"{source}: re-ranked by an earlier reid-eval, which read the {params.metric} query-query and "
            "gallery-gallery distances by row (the authors' release, and reid-eval now, read them by column); "
            "rerun `reid-eval match --rerank` with its parameters to replace it")


def _flavour_of(data: Mapping[str, Any]) -> str:
    """The AP flavour of a results file's JSON, with the averages it states (``averaged_over``).

    Files written before ``averaged_over`` averaged every flavour over the
    valid queries: their ``market1501`` is ``market1501-valid``.
    """
    flavour = str(data["ap_flavour"])
    over = data.get("averaged_over", "valid")
    if over not in AVERAGED_OVER:
        raise ValueError(f"averaged_over must be one of {', '.join(AVERAGED_OVER)}, got {over!r}")
    if flavour == "market1501" and over == "valid":
        return "market1501-valid"
    if flavour in AP_FLAVOURS and averages_over_all(flavour) != (over == "all"):
        raise ValueError(f"ap_flavour {flavour} does not average over {over} queries")
    return flavour
