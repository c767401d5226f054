"""Export reviewed labels: the rows every format shares, CSV, an ImageFolder tree (or zip) and a
run's checkpoint. Label Studio has its own module (label_studio.py); formats.py is the table of all.

One row per sample a person or the model has said something about: the given labeled and
validation samples, and every pool sample with a pseudo-label or a decision. `final_label` is
what a retrain would train on (empty for pending and rejected samples).
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from mpl_core.engine.checkpoint import latest_checkpoint
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.media import export_image, export_suffix
from mpl_core.workspace.review import status_of, threshold_index
from mpl_core.workspace.workspace import Workspace

CSV_COLUMNS = ("sample_id", "pool_index", "split", "pseudo_label", "confidence", "margin", "status",
               "final_label", "reviewer", "decided_at")


def export_rows(ws: Workspace) -> list[dict]:
    ds, split = ws.dataset_and_split()
    names = ds.class_names
    rows = []
    for part, indices in (("labeled", split.labeled), ("validation", split.val)):
        for i in indices.tolist():
            rows.append(_row(ds.train.ids[i], i, part, None, "given", names[int(ds.train.labels[i])]))
    pl = ws.store.pseudo_labels()
    dec = ws.store.current_decisions()
    by_idx = {int(i): k for k, i in enumerate(dec["idx"])}
    seen = set(split.val.tolist())  # a pool image labeled for validation since the round: a validation row
    if pl is not None:
        status = status_of(pl, dec)
        for k in range(len(pl)):
            i = int(pl.idx[k])
            if i in seen:
                continue
            seen.add(i)
            rows.append(_pool_row(ds, i, names, pl.label[k], pl.confidence[k], pl.margin[k], status[k],
                                  dec, by_idx.get(i)))
    for i, k in by_idx.items():  # decided samples without a pseudo-label (labeled by hand)
        if i not in seen:
            rows.append(_pool_row(ds, i, names, None, None, None, dec["action"][k], dec, k))
    return rows


def _row(sample_id, idx, part, pseudo, status, final, conf=None, margin=None, who="", at=None) -> dict:
    return {"sample_id": sample_id, "pool_index": idx, "split": part, "pseudo_label": pseudo or "",
            "confidence": "" if conf is None else round(float(conf), 5),
            "margin": "" if margin is None else round(float(margin), 5), "status": status,
            "final_label": final or "", "reviewer": who,
            "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at)) if at else ""}


def _pool_row(ds, i, names, label, conf, margin, status, dec, k) -> dict:
    final, who, at = None, "", None
    if k is not None:
        who, at = dec["who"][k], dec["at"][k]
        if dec["action"][k] != "reject":
            final = names[int(dec["label"][k])]
    pseudo = names[int(label)] if label is not None else None
    return _row(ds.train.ids[i], i, "unlabeled", pseudo, status, final, conf, margin, who, at)


def csv_bytes(ws: Workspace) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(export_rows(ws))
    return buf.getvalue().encode("utf-8")


def export_csv(ws: Workspace, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(csv_bytes(ws))
    return out


# --- ImageFolder -------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_name(sample_id: str, idx: int, suffix: str = ".png") -> str:
    """A file name that is safe everywhere and unique (the pool index leads); suffix: see export_suffix."""
    stem = _UNSAFE.sub("_", sample_id.rsplit(".", 1)[0] if "." in sample_id.rsplit("/", 1)[-1] else sample_id)
    return f"{int(idx):06d}_{stem.strip('._')[:80]}{suffix}"


def class_folder_names(class_names: list[str]) -> list[str]:
    """Folder names for classes: unsafe characters replaced, collisions numbered."""
    out, used = [], set()
    for n, name in enumerate(class_names):
        base = _UNSAFE.sub("_", name).strip("._") or f"class_{n}"
        folder = base if base not in used else f"{base}_{n}"
        used.add(folder)
        out.append(folder)
    return out


def imagefolder_items(ws: Workspace) -> list[tuple[str, int]]:
    """(relative path, pool index) of every image with a label a retrain would use."""
    names = ws.dataset().class_names
    folders = dict(zip(names, class_folder_names(names)))
    ds = ws.dataset()
    return [(f"{folders[r['final_label']]}/"
             f"{image_name(r['sample_id'], r['pool_index'], export_suffix(ds, r['sample_id']))}", r["pool_index"])
            for r in export_rows(ws) if r["final_label"]]


def imagefolder_files(ws: Workspace) -> Iterator[tuple[str, bytes]]:
    """(relative path, contents): classes.json and class/file.png for every usable label."""
    ds = ws.dataset()
    folders = class_folder_names(ds.class_names)  # "T-shirt/top" is the folder "T-shirt_top"
    yield "classes.json", json.dumps({"folder_to_class": dict(zip(folders, ds.class_names)),
                                      "classes": ds.class_names}, indent=1, ensure_ascii=False).encode("utf-8")
    if (summary := precision_summary(ws)) is not None:
        yield "precision.json", summary
    for rel, idx in imagefolder_items(ws):
        yield rel, export_image(ds, idx)


def precision_summary(ws: Workspace) -> bytes | None:
    """precision.json: the newest round's estimated precision by threshold, with its 90% interval and
    the validation images behind it (what a reader of the export should trust); None before any round."""
    if ws.store.latest_round() is None:
        return None
    index = threshold_index(ws)
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in index.sweep([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99])]
    note = ("est_precision: how often the validation images that pass a threshold were labeled right (Jeffreys "
            "posterior mean); est_low and est_high: its 90% interval; val_support: how many validation images "
            "pass. true_precision only where the dataset knows every label.")
    return json.dumps({"round": ws.store.latest_round(), "note": note, "thresholds": rows}, indent=1).encode("utf-8")


def export_imagefolder(ws: Workspace, out: str | Path, *, as_zip: bool = False) -> Path:
    """An ImageFolder tree (class/file.png) of every labeled image, or the same as a zip file."""
    out = Path(out)
    if as_zip:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            write_zip(imagefolder_files(ws), f)
    else:
        write_tree(imagefolder_files(ws), out)
    return out


def write_tree(files: Iterable[tuple[str, bytes]], root: str | Path) -> None:
    root = Path(root)
    for rel, data in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_zip(files: Iterable[tuple[str, bytes]], target: BinaryIO) -> None:
    """Files into a zip on a binary file object (a file or a BytesIO); stored, PNGs are compressed."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for rel, data in files:
            zf.writestr(rel, data)


# --- checkpoint --------------------------------------------------------------------------------------

def export_checkpoint(ws: Workspace, run_id: int | None, out: str | Path) -> Path:
    """Copy a run's newest checkpoint (and its JSON description) to out."""
    runs = ws.store.runs()
    if run_id is None:
        done = [r for r in runs if latest_checkpoint(ws.run_dir(r["id"]))]
        if not done:
            raise MPLStudioError("no checkpoint in this workspace yet: train a model first")
        run_id = done[-1]["id"]
    src = latest_checkpoint(ws.run_dir(run_id))
    if src is None:
        raise MPLStudioError(f"run {run_id} has no checkpoint")
    out = Path(out)
    if out.suffix != ".safetensors":
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"{ws.name}-run{run_id}-{src.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    if src.with_suffix(".json").exists():
        shutil.copyfile(src.with_suffix(".json"), out.with_suffix(".json"))
    return out
