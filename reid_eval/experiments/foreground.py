"""Whether a cache's foreground probabilities may weigh FPR: the one rule.

FPR (paper Eq. 5) weighs each probe location by its foreground probability.
A network whose foreground generator was never trained (``checkpoint init``,
a converted trunk without one, a module that gives no foreground map) gives
noise or uniform weights there, and an "FPR" row from it would not be the
paper's method. Such a cache is refused for ``--metric fpr`` unless the run
asks for it by name, and the results and the report say so.
"""

from __future__ import annotations

from reid_eval.errors import ReidEvalError
from reid_eval.features.cache import FOREGROUND_TRAINED_ATTR, TRAIN_FOREGROUND_HINT, CacheSource, read_attrs

#: The option that runs FPR on an untrained foreground anyway.
UNTRAINED_FOREGROUND_OPTION = "--untrained-foreground"
#: Foreground states recorded with the results.
TRAINED, UNTRAINED, UNRECORDED = "trained", "untrained", "unrecorded"


def foreground_state(cache_file: CacheSource) -> str:
    """``trained``, ``untrained``, or ``unrecorded`` (a cache written before reid-eval recorded it)."""
    return state_of(read_attrs(cache_file))


def state_of(attrs: dict) -> str:
    """:func:`foreground_state` from a cache's root attributes already read."""
    if FOREGROUND_TRAINED_ATTR not in attrs:
        return UNRECORDED
    return TRAINED if bool(attrs[FOREGROUND_TRAINED_ATTR]) else UNTRAINED


def check_foreground(cache_file: CacheSource, metric: str, allow_untrained: bool) -> str:
    """The cache's foreground state for a run of ``metric``; raises ReidEvalError for FPR on an untrained one.

    Only ``fpr`` reads the foreground; every other metric passes (state as found).
    An unrecorded state is refused too: ``reid-eval extract`` records it without recomputing.
    """
    state = foreground_state(cache_file)
    if metric != "fpr" or state == TRAINED or allow_untrained:
        return state
    if state == UNRECORDED:
        raise ReidEvalError(
            f"cache {cache_file} does not record whether its foreground generator was trained: rerun `reid-eval extract` "
            f"with its checkpoint (it records it without recomputing), or pass {UNTRAINED_FOREGROUND_OPTION}"
        )
    raise ReidEvalError(
        f"--metric fpr: the foreground generator of cache {cache_file} was never trained, so FPR would weigh locations "
        f"by noise; {TRAIN_FOREGROUND_HINT}, or pass {UNTRAINED_FOREGROUND_OPTION} to run it anyway (DSR needs no foreground)"
    )
