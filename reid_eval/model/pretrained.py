"""ImageNet start: torchvision's ImageNet weights for a ResNet trunk, fetched
through torchvision's weights API into torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch`` by default), so a machine
that downloaded them once, or where the file was placed, needs no network.

The weights are torchvision's ``IMAGENET1K_V1`` (the classic ones that the
paper's era, fast-reid and torchreid start from), not the newer V2 recipe.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

from reid_eval.errors import ReidEvalError
from reid_eval.model.convert import convert_state
from reid_eval.model.network import IBN_NAMES, FPRNet, ModelConfig

IMAGENET_WEIGHTS = "IMAGENET1K_V1"


def imagenet_model(config: ModelConfig, seed: int = 0) -> tuple[FPRNet, ModelConfig, dict[str, Any]]:
    """``config``'s model with torchvision's ImageNet trunk; returns (model in eval mode, config, extra).

    The foreground generator keeps a seeded random init. Offline, or for a
    trunk torchvision has no weights for (IBN-a), raises ReidEvalError naming
    the ``reid-eval checkpoint convert`` command that imports a file instead.
    """
    if config.backbone in IBN_NAMES:
        raise ReidEvalError(
            f"--pretrained imagenet: torchvision has no ImageNet weights for {config.backbone}; download the IBN-Net "
            f"authors' {config.backbone} file and run `reid-eval checkpoint convert --from ibn-net FILE --out OUT`"
        )
    if config.is_osnet:
        raise ReidEvalError(
            f"--pretrained imagenet: torchvision has no ImageNet weights for {config.backbone}; download torchreid's "
            f"{config.backbone}_imagenet.pth from its model zoo and run `reid-eval checkpoint convert --from torchreid FILE --out OUT`"
        )
    weights = torchvision.models.get_model_weights(config.backbone)[IMAGENET_WEIGHTS]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        state = weights.get_state_dict(progress=sys.stderr.isatty(), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, timeouts, a damaged cached file
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split())[:120] or type(exc).__name__
        raise ReidEvalError(
            f"--pretrained imagenet: cannot fetch torchvision's {config.backbone} ImageNet weights ({weights.url} -> {cached}): "
            f"{reason}; on an offline machine download that file elsewhere and run "
            "`reid-eval checkpoint convert --from torchvision FILE --out OUT`, or place it at the path above"
        ) from exc
    model, config, extra = convert_state("torchvision", state, str(cached), seed, **config.to_dict())
    extra = {"init": f"torchvision {config.backbone} {IMAGENET_WEIGHTS}", "weights_url": weights.url, **extra}
    return model, config, extra
