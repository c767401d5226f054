"""What a workspace's runs would start from, checked before Start: the Data and Train pages' line on
the start weights, the default start, and the check a job start makes.

    statuses = start_weights(ws, probe, model="auto", weights="imagenet")  # one WeightsStatus a model
    default = default_start(ws, probe)   # "imagenet", or FROM_SCRATCH's "none" where they cannot be had
    require_start_weights(ws, cfg, probe)  # raises with the status's message, before a job starts

Nothing here downloads: a run downloads ImageNet weights when it starts (service/work.py says so in
the job's status). `probe` is the Studio's HostProbe, whose answers are kept a minute.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mpl_core.config import FROM_SCRATCH, ModelConfig, RunConfig
from mpl_core.engine.algorithms import get_algorithm
from mpl_core.engine.backbones import HostProbe, WeightsStatus, weights_status
from mpl_core.engine.models import resolve_model_name
from mpl_core.engine.models import start_weights as model_starts
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.workspace import Workspace

DEFAULT_WEIGHTS = ModelConfig.weights  # "imagenet": what a run starts from unless told otherwise


@dataclass(frozen=True)
class DefaultStart:
    """The start a page offers first for a workspace's default model."""
    weights: str  # DEFAULT_WEIGHTS, or "none" where the default model's ImageNet weights cannot be had
    statuses: tuple[WeightsStatus, ...]  # of the default model's ImageNet weights
    note: str  # "" or, where the default became FROM_SCRATCH, why and how to get the weights


def start_weights(ws: Workspace, probe: HostProbe, *, model: str = "auto", student: str = "",
                  weights: str = DEFAULT_WEIGHTS, algorithm: str = "mpl") -> list[WeightsStatus]:
    """Whether each model of a fresh run with these settings on ws's data has its start weights at
    hand ("auto" resolved at the data's training size), without downloading anything."""
    cfg = ModelConfig(name=model, student=student, weights=weights, image_size=ws.dataset().image_size)
    return _statuses(cfg, algorithm, probe)


def _statuses(cfg: ModelConfig, algorithm: str, probe: HostProbe) -> list[WeightsStatus]:
    pairs = model_starts(cfg, get_algorithm(algorithm).teacher)
    return [weights_status(arch, weights, probe) for arch, weights in pairs]


def default_start(ws: Workspace, probe: HostProbe) -> DefaultStart:
    """ImageNet weights for the default model where they are cached or can be downloaded; else
    FROM_SCRATCH, with a note saying why and where to put the weights file to use them."""
    statuses = tuple(start_weights(ws, probe))
    missing = [s for s in statuses if s.state == "unreachable"]
    if not missing:
        return DefaultStart(DEFAULT_WEIGHTS, statuses, "")
    s = missing[0]
    note = (f"Training starts {FROM_SCRATCH}: {s.arch}'s ImageNet weights are not in {s.file.parent}/ and "
            f"cannot be downloaded here (no connection). To start from them, put {s.file.name} in {s.file.parent}/.")
    scratch = resolve_model_name(ModelConfig(weights="none", image_size=ws.dataset().image_size))
    if scratch == "cnn" != s.arch:  # "auto" from scratch at this size (engine/models.SCRATCH_CNN_MAX_SIZE)
        note += (f" From scratch the default model (auto) is the small CNN, not {s.arch}: {s.arch} from scratch "
                 "steps about 3 times as slowly on a CPU and learns little from a few labels.")
    return DefaultStart("none", statuses, note)


def require_start_weights(ws: Workspace, cfg: RunConfig, probe: HostProbe) -> None:
    """Raise, before a job starts, where a model of cfg's fresh run would not find its start weights."""
    model = dataclasses.replace(cfg.model, image_size=ws.dataset().image_size)
    for status in _statuses(model, cfg.algorithm.name, probe):
        if not status.ready:
            raise MPLStudioError(status.message)
