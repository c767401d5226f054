"""Export reviewed labels: CSV, Label Studio JSON (with the model's predictions), an ImageFolder
tree (or zip), and a run's checkpoint; FORMATS says how each is written to disk and downloaded.

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
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from mpl_core.engine.checkpoint import latest_checkpoint
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.media import png_bytes
from mpl_core.workspace.review import status_of
from mpl_core.workspace.workspace import Workspace

CSV_COLUMNS = ("sample_id", "pool_index", "split", "pseudo_label", "confidence", "margin", "status",
               "final_label", "reviewer", "decided_at")


def export_rows(ws: Workspace) -> list[dict]:
    ds, split = ws.dataset(), ws.split()
    names = ds.class_names
    rows = []
    for part, indices in (("labeled", split.labeled), ("validation", split.val)):
        for i in indices.tolist():
            rows.append(_row(ds.train.ids[i], i, part, None, "given", names[int(ds.train.labels[i])]))
    pl = ws.store.pseudo_labels()
    dec = ws.store.current_decisions()
    by_idx = {int(i): k for k, i in enumerate(dec["idx"])}
    seen = set()
    if pl is not None:
        status = status_of(pl, dec)
        for k in range(len(pl)):
            i = int(pl.idx[k])
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


# --- Label Studio ----------------------------------------------------------------------------------

def label_studio_config(class_names: list[str]) -> str:
    """The labeling interface XML that matches the exported tasks."""
    from xml.sax.saxutils import quoteattr
    choices = "\n".join(f"    <Choice value={quoteattr(n)}/>" for n in class_names)
    return ('<View>\n  <Image name="image" value="$image"/>\n  <Choices name="label" toName="image" '
            f'choice="single">\n{choices}\n  </Choices>\n</View>\n')


def label_studio_tasks(ws: Workspace, image_prefix: str = "images/") -> list[dict]:
    """Label Studio tasks: the model's pseudo-label as a prediction, human/accepted labels as annotations."""
    pl = ws.store.pseudo_labels()
    version = f"run-{pl.run_id}-{pl.model}-round-{pl.round}" if pl is not None else "none"
    tasks = []
    for n, row in enumerate(r for r in export_rows(ws) if r["split"] == "unlabeled"):
        task = {"id": n + 1, "data": {"image": image_prefix + image_name(row["sample_id"], row["pool_index"]),
                                      "sample_id": row["sample_id"], "pool_index": row["pool_index"],
                                      "status": row["status"]}}
        if row["pseudo_label"]:
            task["predictions"] = [{"model_version": version, "score": row["confidence"],
                                    "result": [_choice(row["pseudo_label"])]}]
        if row["final_label"]:
            task["annotations"] = [{"result": [_choice(row["final_label"])],
                                    "completed_by": {"email": row["reviewer"]} if "@" in row["reviewer"] else 1}]
        tasks.append(task)
    return tasks


def _choice(label: str) -> dict:
    return {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}


def label_studio_files(ws: Workspace, images: bool = True) -> Iterator[tuple[str, bytes]]:
    """(relative path, contents): tasks.json, label_config.xml and the PNGs the tasks point at."""
    tasks = label_studio_tasks(ws)
    ds = ws.dataset()
    yield "tasks.json", json.dumps(tasks, indent=1, ensure_ascii=False).encode("utf-8")
    yield "label_config.xml", label_studio_config(ds.class_names).encode("utf-8")
    if images:
        for t in tasks:
            yield t["data"]["image"], png_bytes(ds.train.images[t["data"]["pool_index"]])


def export_label_studio(ws: Workspace, out_dir: str | Path, *, images: bool = True) -> Path:
    """out_dir/tasks.json, label_config.xml and images/ (PNG files the tasks point at)."""
    write_tree(label_studio_files(ws, images), out_dir)
    return Path(out_dir) / "tasks.json"


# --- ImageFolder -------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_name(sample_id: str, idx: int) -> str:
    """A file name that is safe everywhere and unique (the pool index leads)."""
    stem = _UNSAFE.sub("_", sample_id.rsplit(".", 1)[0] if "." in sample_id.rsplit("/", 1)[-1] else sample_id)
    return f"{int(idx):06d}_{stem.strip('._')[:80]}.png"


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
    return [(f"{folders[r['final_label']]}/{image_name(r['sample_id'], r['pool_index'])}", r["pool_index"])
            for r in export_rows(ws) if r["final_label"]]


def imagefolder_files(ws: Workspace) -> Iterator[tuple[str, bytes]]:
    """(relative path, contents): classes.json and class/file.png for every usable label."""
    ds = ws.dataset()
    yield "classes.json", json.dumps({"classes": ds.class_names, "folders": class_folder_names(ds.class_names)},
                                     indent=1).encode("utf-8")
    for rel, idx in imagefolder_items(ws):
        yield rel, png_bytes(ds.train.images[idx])


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


# --- the formats -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportFormat:
    """How one format is written to a file or folder (the CLI) and made into a download (the app)."""
    title: str  # what a person is offered, in words
    write: Callable[[Workspace, Path, int | None], Path]  # (workspace, out, run_id) -> what was written
    download: Callable[[Workspace, int | None], tuple[bytes, str]] | None  # -> (contents, file name); None: a folder
    mime: str = "application/zip"  # of the download


def _zip_download(files: Callable[[Workspace], Iterable[tuple[str, bytes]]], what: str):
    def download(ws: Workspace, run_id: int | None) -> tuple[bytes, str]:
        buf = io.BytesIO()
        write_zip(files(ws), buf)
        return buf.getvalue(), f"{ws.name}-{what}.zip"
    return download


def _checkpoint_download(ws: Workspace, run_id: int | None) -> tuple[bytes, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = export_checkpoint(ws, run_id, tmp)
        return path.read_bytes(), path.name


# In the order of config.EXPORT_FORMATS (the CLI's choices), which a test keeps equal to these keys.
FORMATS: dict[str, ExportFormat] = {
    "csv": ExportFormat("CSV of every label and decision", lambda ws, out, run_id: export_csv(ws, out),
                        lambda ws, run_id: (csv_bytes(ws), f"{ws.name}-labels.csv"), "text/csv"),
    "label-studio": ExportFormat("Label Studio tasks (zip: tasks.json, label_config.xml, images)",
                                 lambda ws, out, run_id: export_label_studio(ws, out),
                                 _zip_download(label_studio_files, "label-studio")),
    "imagefolder": ExportFormat("ImageFolder tree (class/image.png) of every usable label",
                                lambda ws, out, run_id: export_imagefolder(ws, out), None),
    "imagefolder-zip": ExportFormat("ImageFolder zip (class/image.png) of every usable label",
                                    lambda ws, out, run_id: export_imagefolder(ws, out, as_zip=True),
                                    _zip_download(imagefolder_files, "imagefolder")),
    "checkpoint": ExportFormat("Model checkpoint (safetensors)",
                               lambda ws, out, run_id: export_checkpoint(ws, run_id, out), _checkpoint_download,
                               "application/octet-stream"),
}


def downloads() -> dict[str, tuple[str, str]]:
    """The formats the app offers as downloads: name -> (title, MIME type)."""
    return {name: (f.title, f.mime) for name, f in FORMATS.items() if f.download is not None}


def _format(fmt: str) -> ExportFormat:
    if fmt not in FORMATS:
        raise MPLStudioError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return FORMATS[fmt]


def export(ws: Workspace, fmt: str, out: str | Path, *, run_id: int | None = None) -> Path:
    """Write the workspace's labels (or a run's checkpoint) in format fmt to out; returns the path."""
    return _format(fmt).write(ws, Path(out), run_id)


def export_bytes(ws: Workspace, fmt: str, run_id: int | None = None) -> tuple[bytes, str]:
    """(file contents, file name) of format fmt, for a download."""
    download = _format(fmt).download
    if download is None:
        raise MPLStudioError(f"{fmt} is written as a folder; download {fmt}-zip instead")
    return download(ws, run_id)
