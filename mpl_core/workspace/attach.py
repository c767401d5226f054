"""Bring a checkpoint trained elsewhere into a workspace as a run: a `torchrun ... train --out`
job on a GPU machine, or a run from another workspace.

    run_id = attach_checkpoint(ws, "runs/c10-8gpu")     # a checkpoint file or a run folder

The checkpoint is checked (MPL Studio's format, the workspace's classes and image shape, the
weights load) and copied into the workspace's run folder, with the training curves when the
folder has the `result.json` that `train --out` writes. The run can then be pseudo-labeled,
reviewed, exported and, if it stopped early, resumed like any other.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from mpl_core.engine.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint
from mpl_core.engine.state import load_model
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.workspace import Workspace


def attach_checkpoint(ws: Workspace, path: str | Path) -> int:
    """Add the checkpoint (or a folder's newest) to ws as a new run; returns its id."""
    source = _find(Path(path))
    _, info = load_checkpoint(source)
    check_fits(ws, info)
    load_model(source, "student")  # the weights must load into the model they describe
    data_note = _data_note(ws, info)
    run_id = ws.store.create_run("train", info["config"])
    target = checkpoint_path(ws.run_dir(run_id), info["step"] + info.get("finetune_step", 0))
    try:
        _copy(source, target)
        _copy(source.with_suffix(".json"), target.with_suffix(".json"), required=False)
    except OSError as exc:
        ws.store.update_run(run_id, status="failed", message=f"could not copy the checkpoint: {exc}")
        raise MPLStudioError(f"could not copy {source.name} into the workspace ({exc.strerror or exc}); "
                             "free some disk space and try again") from exc
    for row in _history(source.parent):
        ws.store.add_metrics(run_id, int(row.pop("step")), row.pop("phase"), row)
    done = info.get("phase") == "done"
    procs = info.get("world_size", 1)
    message = f"added from {source.name}" + (f", trained by {procs} processes" if procs > 1 else "")
    if not done:
        message += f"; stopped at step {info['step']}, resume to continue"
    ws.store.update_run(run_id, status="done" if done else "stopped", checkpoint=str(target),
                        metrics={**(info.get("metrics") or {}), **({"processes": procs} if procs > 1 else {})},
                        message=message + data_note)
    return run_id


def _find(path: Path) -> Path:
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise MPLStudioError(f"no checkpoint (ckpt-*.safetensors) in {path}; give the folder a run wrote to")
        return found
    if not path.is_file():
        raise MPLStudioError(f"no checkpoint at {path}")
    return path


def check_fits(ws: Workspace, info: dict) -> None:
    ds = ws.dataset()
    if info["class_names"] != ds.class_names:
        raise MPLStudioError(f"the checkpoint's classes ({', '.join(info['class_names'][:6])}…) differ from this "
                             f"workspace's ({', '.join(ds.class_names[:6])}…); use a workspace on the same data")
    m = info["model"]
    if (m["in_channels"], m["image_size"]) != (ds.in_channels, ds.image_size):
        raise MPLStudioError(f"the checkpoint takes {m['in_channels']}-channel {m['image_size']}px images and this "
                             f"workspace has {ds.in_channels}-channel {ds.image_size}px ones")


def _data_note(ws: Workspace, info: dict) -> str:
    """A split other than the workspace's means the run may have trained on its validation images."""
    theirs = info["config"]["data"]
    keys = ("labels_per_class", "val_per_class", "seed", "val_fraction", "max_unlabeled")
    if all(theirs.get(k) == getattr(ws.data, k, None) for k in keys):
        return ""
    return ("; trained on another split than this workspace's, so its validation-based precision estimates "
            "may be optimistic")


def _copy(source: Path, target: Path, required: bool = True) -> None:
    if not source.exists() and not required:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    shutil.copyfile(source, part)
    part.replace(target)


def _history(folder: Path) -> list[dict]:
    """The logged rows of result.json (written by `train --out`), if the folder has one."""
    try:
        rows = json.loads((folder / "result.json").read_text()).get("history", [])
    except (OSError, ValueError):
        return []
    return [dict(r) for r in rows if isinstance(r, dict) and "step" in r and "phase" in r]
