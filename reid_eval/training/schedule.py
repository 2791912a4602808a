"""Learning-rate schedule: linear warmup, then cosine or step decay.

The paper states no schedule. The default follows the strong re-ID baseline
the field trains with (Luo et al., "Bag of Tricks and A Strong Baseline for
Deep Person Re-identification", CVPRW 2019, §3.1): Adam at 3.5e-4 after a
linear warmup over the first 10 epochs from a tenth of it. Their decay is a
step schedule tied to a 120-epoch run (×0.1 at epochs 40 and 70); for the
paper's 200 epochs, and for any other length, the default decays along a
half cosine from the end of the warmup to zero at the last step (Loshchilov &
Hutter, "SGDR", ICLR 2017, without restarts; the decay of fast-reid's
stronger baselines). ``step`` reproduces the Bag-of-Tricks decay at
milestones of your choice; ``constant`` keeps the rate after the warmup.

The rate is a pure function of the position in training, updated at every
step, so a resumed run continues on the same curve with no scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LR_SCHEDULES: tuple[str, ...] = ("cosine", "step", "constant")
#: Warmup epochs when none are given: Bag of Tricks' 10, or half of a shorter run (so a default never
#: refuses a valid --epochs).
DEFAULT_WARMUP_EPOCHS = 10


def default_warmup_epochs(epochs: int) -> int:
    """The warmup of a run of ``epochs`` when none is given: ``min(10, epochs // 2)``."""
    return min(DEFAULT_WARMUP_EPOCHS, max(0, epochs) // 2)


#: The warmup starts at this fraction of the base rate (Bag of Tricks: 3.5e-5 → 3.5e-4).
WARMUP_START = 0.1


@dataclass(frozen=True)
class LRSchedule:
    """``kind`` in LR_SCHEDULES; ``warmup_epochs`` of linear warmup; for ``step``,
    the rate is multiplied by ``gamma`` at each epoch in ``milestones`` (1-based
    epoch counts: 40 means from the 41st epoch on)."""

    kind: str = "cosine"
    warmup_epochs: int = 10
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.kind!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"--warmup-epochs must be non-negative, got {self.warmup_epochs}")
        if self.kind == "step" and not self.milestones:
            raise ValueError("--lr-schedule step needs --lr-milestones (e.g. 40,70)")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"the step decay factor must be in (0, 1], got {self.gamma}")

    def check(self, epochs: int) -> None:
        """ValueError naming the option when the schedule does not fit a run of ``epochs``."""
        if self.warmup_epochs >= epochs:
            raise ValueError(f"--warmup-epochs {self.warmup_epochs} leaves nothing of --epochs {epochs}; "
                             "use fewer warmup epochs (0 for none)")
        bad = [m for m in self.milestones if not self.warmup_epochs <= m < epochs]
        if self.kind == "step" and bad:
            raise ValueError(f"--lr-milestones {bad[0]} is outside the run after its warmup "
                             f"(epochs {self.warmup_epochs}..{epochs - 1})")

    def factor(self, epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
        """Multiplier of the base rate at 0-based ``step`` of 0-based ``epoch``."""
        t = epoch + step / max(steps_per_epoch, 1)  # epochs done, fractional
        if t < self.warmup_epochs:
            return WARMUP_START + (1.0 - WARMUP_START) * t / self.warmup_epochs
        if self.kind == "cosine":
            span = epochs - self.warmup_epochs
            return 0.5 * (1.0 + math.cos(math.pi * (t - self.warmup_epochs) / span))
        if self.kind == "step":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d
