"""The export formats in one table: how each is written to a file or folder (the command line) and
made into a download (the app). config.EXPORT_FORMATS, the command line's choices, equals its keys."""
from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mpl_core.errors import MPLStudioError
from mpl_core.workspace.export import (
    csv_bytes,
    export_checkpoint,
    export_csv,
    export_imagefolder,
    imagefolder_files,
    write_tree,
    write_zip,
)
from mpl_core.workspace.label_studio import LOCAL_FILES_PREFIX, label_studio_files
from mpl_core.workspace.workspace import Workspace


@dataclass(frozen=True)
class ExportOptions:
    run_id: int | None = None  # checkpoint: which run (default: the newest with one)
    image_prefix: str = LOCAL_FILES_PREFIX  # Label Studio: the URL prefix of the task images


@dataclass(frozen=True)
class ExportFormat:
    """How one format is written to a file or folder and made into a download."""
    title: str  # what a person is offered, in words
    write: Callable[[Workspace, Path, ExportOptions], Path]  # -> what was written
    download: Callable[[Workspace, ExportOptions], tuple[bytes, str]] | None  # -> (contents, name); None: a folder
    mime: str = "application/zip"  # of the download


def _zip_download(files: Callable[[Workspace, ExportOptions], Iterable[tuple[str, bytes]]], what: str):
    def download(ws: Workspace, opts: ExportOptions) -> tuple[bytes, str]:
        buf = io.BytesIO()
        write_zip(files(ws, opts), buf)
        return buf.getvalue(), f"{ws.name}-{what}.zip"
    return download


def _checkpoint_download(ws: Workspace, opts: ExportOptions) -> tuple[bytes, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = export_checkpoint(ws, opts.run_id, tmp)
        return path.read_bytes(), path.name


def _label_studio_files(ws: Workspace, opts: ExportOptions):
    return label_studio_files(ws, image_prefix=opts.image_prefix)


def _write_label_studio(ws: Workspace, out: Path, opts: ExportOptions) -> Path:
    write_tree(_label_studio_files(ws, opts), out)
    return out / "tasks.json"


# In the order of config.EXPORT_FORMATS, which a test keeps equal to these keys.
FORMATS: dict[str, ExportFormat] = {
    "csv": ExportFormat("CSV of every label and decision", lambda ws, out, opts: export_csv(ws, out),
                        lambda ws, opts: (csv_bytes(ws), f"{ws.name}-labels.csv"), "text/csv"),
    "label-studio": ExportFormat("Label Studio project (zip: tasks.json, label_config.xml, README.txt, images)",
                                 _write_label_studio, _zip_download(_label_studio_files, "label-studio")),
    "imagefolder": ExportFormat("ImageFolder tree (class/image.png) of every usable label",
                                lambda ws, out, opts: export_imagefolder(ws, out), None),
    "imagefolder-zip": ExportFormat("ImageFolder zip (class/image.png, classes.json) of every usable label",
                                    lambda ws, out, opts: export_imagefolder(ws, out, as_zip=True),
                                    _zip_download(lambda ws, opts: imagefolder_files(ws), "imagefolder")),
    "checkpoint": ExportFormat("Model checkpoint (safetensors)",
                               lambda ws, out, opts: export_checkpoint(ws, opts.run_id, out), _checkpoint_download,
                               "application/octet-stream"),
}


def _format(fmt: str) -> ExportFormat:
    if fmt not in FORMATS:
        raise MPLStudioError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return FORMATS[fmt]


def export(ws: Workspace, fmt: str, out: str | Path, *, run_id: int | None = None,
           image_prefix: str = LOCAL_FILES_PREFIX) -> Path:
    """Write the workspace's labels (or a run's checkpoint) in format fmt to out; returns the path."""
    return _format(fmt).write(ws, Path(out), ExportOptions(run_id, image_prefix))


def export_bytes(ws: Workspace, fmt: str, run_id: int | None = None,
                 image_prefix: str = LOCAL_FILES_PREFIX) -> tuple[bytes, str]:
    """(file contents, file name) of format fmt, for a download."""
    download = _format(fmt).download
    if download is None:
        raise MPLStudioError(f"{fmt} is written as a folder; download {fmt}-zip instead")
    return download(ws, ExportOptions(run_id, image_prefix))


def downloads() -> dict[str, tuple[str, str]]:
    """The formats the app offers as downloads: name -> (title, MIME type)."""
    return {name: (f.title, f.mime) for name, f in FORMATS.items() if f.download is not None}
