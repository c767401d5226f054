"""Self-describing checkpoints: one safetensors file holding every tensor (models, optimizer
state, RNG state) with the JSON description (config, step, class names) in its header, plus
a human-readable JSON copy beside it. No pickle anywhere: loading a checkpoint cannot run code.

Writes are atomic (temp file, fsync, os.replace), and the previous checkpoint is kept, so a
crash in the middle of a write leaves the last good one loadable.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from mpl_core.errors import MPLStudioError

FORMAT = "mpl-studio-checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d{7})\.safetensors$")


def flatten_state(prefix: str, state: dict, tensors: dict, meta: dict) -> None:
    """Split a (nested) state dict into tensors (for safetensors) and JSON values (for meta)."""
    for key, value in state.items():
        name = f"{prefix}.{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            flatten_state(name, value, tensors, meta)
        else:
            meta[name] = value


def unflatten_state(prefix: str, tensors: dict, meta: dict) -> dict:
    """Inverse of flatten_state; integer-looking keys become ints (optimizer state)."""
    out: dict = {}
    for source in (tensors, meta):
        for name, value in source.items():
            if not name.startswith(prefix + "."):
                continue
            parts = name[len(prefix) + 1:].split(".")
            node = out
            for part in parts[:-1]:
                node = node.setdefault(int(part) if part.isdigit() else part, {})
            node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return out


def module_state(prefix: str, tensors: dict) -> dict:
    """A module's flat state dict back from the tensors saved under prefix (keys keep their dots)."""
    start = len(prefix) + 1
    return {name[start:]: value for name, value in tensors.items() if name.startswith(prefix + ".")}


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    try:
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], info: dict) -> Path:
    """Write tensors + info atomically to path (a .safetensors file) and a .json beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT, **info}
    text = json.dumps(info, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"mpl_studio": text})
        _fsync_replace(tmp, path)
        side_tmp = path.with_suffix(".json.tmp")
        side_tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
        _fsync_replace(side_tmp, path.with_suffix(".json"))
    except OSError as exc:
        for leftover in (tmp, path.with_suffix(".json.tmp")):
            leftover.unlink(missing_ok=True)
        raise MPLStudioError(f"could not write checkpoint {path.name}: {exc.strerror or exc}; "
                             "free some disk space and try again (the previous checkpoint is kept)") from exc
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read (tensors, info) from a checkpoint file written by save_checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise MPLStudioError(f"no checkpoint at {path}")
    info = read_info(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MPLStudioError(f"{path.name} is not a readable checkpoint ({exc}); use an earlier one") from exc
    return tensors, info


def read_info(path: str | Path) -> dict:
    """The JSON description of a checkpoint (config, model, step) without reading its tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get("mpl_studio")
    except (SafetensorError, OSError, ValueError) as exc:
        raise MPLStudioError(f"{path.name} is not a readable checkpoint ({exc}); use an earlier one") from exc
    if header is None:
        raise MPLStudioError(f"{path.name} is a safetensors file without MPL Studio's description")
    info = json.loads(header)
    if info.get("format") != FORMAT:
        raise MPLStudioError(f"{path.name} has format {info.get('format')!r}; expected {FORMAT}")
    return info


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"ckpt-{step:07d}.safetensors"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """Newest checkpoint that loads; a torn newest file falls back to the previous one."""
    for path in reversed(list_checkpoints(folder)):
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("mpl_studio"):
                    return path
        except (SafetensorError, OSError, ValueError):
            continue
    return None


def prune_checkpoints(folder: str | Path, keep: int = 2) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
