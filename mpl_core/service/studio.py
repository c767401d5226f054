"""The app's one entry into the library: open workspaces, their jobs, and cached review state.

    studio = Studio(data_root)                   # the app keeps one per process
    studio.start(name, "train", cfg=cfg)         # one job per workspace; a second tab sees it
    view = studio.review(name)                   # pseudo-labels, threshold index, statuses
    studio.decide(name, positions, "accept", who="ana")

No Streamlit here: the app wraps a Studio in `st.cache_resource`, pages call its methods and
poll job status. Review state is cached per (round, decisions version), so moving a threshold
or paging the grid never touches SQLite; a decision updates the cache in place after it has
been committed.
"""
from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpl_core.config import DataConfig, RunConfig
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.store import PseudoLabelRows
from mpl_core.workspace.workspace import Workspace, create_workspace, inside, list_workspaces, open_workspace

SORTS = ("least sure first", "most sure first", "smallest margin first", "pool order")


@dataclass
class ReviewView:
    """One pseudo-label round with its threshold index and each row's review status."""
    rows: PseudoLabelRows
    index: object  # ThresholdIndex
    status: np.ndarray  # (N,) object: pending / accept / reject / relabel / manual
    final_label: np.ndarray  # (N,) int64: the label a decision set (-1 if none)
    class_names: list[str]
    version: int
    truth: np.ndarray | None = None  # true labels where the dataset knows them
    _position: dict = field(default_factory=dict)  # pool index -> row position

    def counts(self) -> dict[str, int]:
        names, counts = np.unique(self.status, return_counts=True)
        out = {s: 0 for s in ("pending", "accept", "reject", "relabel", "manual")}
        out.update({str(n): int(c) for n, c in zip(names, counts)})
        return out

    def select(self, *, classes: list[int] | None = None, statuses: list[str] | None = None,
               conf_range: tuple[float, float] | None = None, sort: str = SORTS[0]) -> np.ndarray:
        """Row positions matching the filters, in the chosen order."""
        mask = np.ones(len(self.rows), dtype=bool)
        if classes is not None:
            mask &= np.isin(self.rows.label, classes)
        if statuses is not None:
            mask &= np.isin(self.status, statuses)
        if conf_range is not None:
            mask &= (self.rows.confidence >= conf_range[0]) & (self.rows.confidence <= conf_range[1])
        pos = np.nonzero(mask)[0]
        key = {SORTS[0]: self.rows.confidence, SORTS[1]: -self.rows.confidence,
               SORTS[2]: self.rows.margin}.get(sort)
        return pos if key is None else pos[np.argsort(key[pos], kind="stable")]

    def tiles(self, positions: np.ndarray) -> list[dict]:
        r = self.rows
        return [{"position": int(p), "sample_id": r.sample_ids[p], "pool_index": int(r.idx[p]),
                 "label": int(r.label[p]), "label_name": self.class_names[int(r.label[p])],
                 "confidence": float(r.confidence[p]), "margin": float(r.margin[p]),
                 "status": str(self.status[p]),
                 "final_name": self.class_names[int(self.final_label[p])] if self.final_label[p] >= 0 else ""}
                for p in positions]

    def queue(self, n: int) -> np.ndarray:
        """The n most uncertain pending samples (smallest top-1 margin): to label by hand."""
        pending = np.nonzero(self.status == "pending")[0]
        return pending[np.argsort(self.rows.margin[pending], kind="stable")[:n]]

    def histogram(self, bins: int = 20) -> np.ndarray:
        from mpl_core.workspace.calibration import confidence_histogram
        return confidence_histogram(self.rows.label, self.rows.confidence, len(self.class_names), bins)

    def confusion(self, statuses: list[str] | None = None) -> np.ndarray | None:
        """(K, K) counts: true class (rows) x pseudo-label (columns); None without true labels."""
        if self.truth is None:
            return None
        keep = np.ones(len(self.rows), dtype=bool) if statuses is None else np.isin(self.status, statuses)
        k = len(self.class_names)
        flat = np.bincount(self.truth[keep] * k + self.rows.label[keep], minlength=k * k)
        return flat.reshape(k, k)


class Studio:
    """Process-wide state of the app: thread-safe, one instance per server process."""

    def __init__(self, data_root: str | Path):
        self.data_root = Path(data_root)
        self._lock = threading.RLock()
        self._workspaces: dict[str, Workspace] = {}
        self._jobs: dict[str, object] = {}
        self._views: dict[str, ReviewView] = {}

    # --- workspaces ----------------------------------------------------------------------------

    def workspaces(self) -> list[dict]:
        return list_workspaces(self.data_root)

    def create(self, name: str, data: DataConfig) -> Workspace:
        data.seed = int(data.seed)
        ws = create_workspace(name, data, self.data_root)
        try:
            ws.split()  # load now: a bad folder or budget is an error here, not later in a job
        except MPLStudioError:
            import shutil
            shutil.rmtree(ws.root, ignore_errors=True)
            raise
        with self._lock:
            self._workspaces[name] = ws
        return ws

    def save_upload(self, name: str, data: bytes) -> str:
        """Store an uploaded dataset zip as uploads/<name>.zip; returns its path in the data root.

        Refused when the workspace exists: its zip is its data, and overwriting it would change
        a workspace that already has runs and decisions.
        """
        from mpl_core.workspace.workspace import WORKSPACE_FILE, check_name, workspaces_root
        if (workspaces_root(self.data_root) / check_name(name) / WORKSPACE_FILE).exists():
            raise MPLStudioError(f"workspace {name!r} already exists; pick another name for the new data")
        target = self.data_root / "uploads" / f"{name}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # a failed write (full disk) leaves no half zip under the real name
        return str(target.relative_to(self.data_root))

    def open(self, name: str) -> Workspace:
        from mpl_core.service.jobs import recover
        with self._lock:
            if name not in self._workspaces:
                ws = open_workspace(name, self.data_root)
                recover(ws)
                self._workspaces[name] = ws
            return self._workspaces[name]

    # --- jobs ----------------------------------------------------------------------------------

    def job(self, name: str):
        """The job started from this process for the workspace (running or finished), or None."""
        with self._lock:
            return self._jobs.get(name)

    def start(self, name: str, kind: str, **kwargs):
        """Start a job: kind = train, resume, pseudo_label, retrain or demo."""
        from mpl_core.service import jobs
        ws = self.open(name)
        for key in ("cfg", "retrain_cfg"):
            if key in kwargs and not kwargs[key].train.threads:
                kwargs[key].train.threads = app_threads()
        starters = {"train": lambda: jobs.start_training(ws, kwargs["cfg"]),
                    "resume": lambda: jobs.start_training(ws, run_id=kwargs["run_id"]),
                    "pseudo_label": lambda: jobs.start_pseudo_labeling(ws, kwargs.get("run_id"),
                                                                       kwargs.get("model", "auto")),
                    "retrain": lambda: jobs.start_retrain(ws, kwargs["cfg"]),
                    "demo": lambda: jobs.start_demo(ws, kwargs["cfg"], kwargs["retrain_cfg"],
                                                    target_precision=kwargs.get("target_precision", 0.95))}
        if kind not in starters:
            raise MPLStudioError(f"unknown job kind {kind!r}")
        with self._lock:
            job = starters[kind]()
            self._jobs[name] = job
        return job

    def runs(self, name: str) -> list[dict]:
        return self.open(name).store.runs()

    def outside_job(self, name: str) -> dict | None:
        """A job another process runs on the workspace (the CLI, torchrun), or None: who runs it and
        how far its run is, from the metrics it logs to the store."""
        from mpl_core.service.jobs import describe_holder, lock_is_held, read_holder
        own = self.job(name)
        ws = self.open(name)
        if (own is not None and own.status().active) or not lock_is_held(ws.lock_path):
            return None
        holder = read_holder(ws.lock_path)
        out = {"description": describe_holder(ws.lock_path, holder), "kind": holder.get("kind", ""),
               "run_id": holder.get("run_id"), "phase": "", "step": 0, "total": 0}
        if out["run_id"]:
            try:
                run = ws.store.run(int(out["run_id"]))
            except (MPLStudioError, ValueError):
                return out
            last = ws.store.last_logged(run["id"])
            if last:
                t = run["config"]["train"]
                out["phase"], out["step"] = last
                out["total"] = t["steps"] if out["phase"] == "train" else t["finetune_steps"]
        return out

    def attach_checkpoint(self, name: str, path: str) -> int:
        """Add a checkpoint trained elsewhere (e.g. `torchrun ... train --out runs/x`) as a run.

        path is typed by a user, so it must lie inside the data folder."""
        from mpl_core.workspace.attach import attach_checkpoint
        ws = self.open(name)
        if not path.strip():
            raise MPLStudioError("type the path of a checkpoint (.safetensors) or run folder inside the data folder")
        return attach_checkpoint(ws, inside(path.strip(), self.data_root))

    def metric_rows(self, name: str, run_id: int) -> list[dict]:
        return self.open(name).store.metric_rows(run_id)

    # --- review --------------------------------------------------------------------------------

    def review(self, name: str) -> ReviewView | None:
        """The newest round's review state, rebuilt only when the round or the decisions changed."""
        from mpl_core.workspace.review import decision_state, threshold_index
        ws = self.open(name)
        latest, version = ws.store.latest_round(), ws.store.decisions_version()
        if latest is None:
            return None
        with self._lock:
            view = self._views.get(name)
            if view is not None and view.rows.round == latest and view.version == version:
                return view
            rows = view.rows if view is not None and view.rows.round == latest else ws.store.pseudo_labels(latest)
            index = view.index if view is not None and view.rows.round == latest else threshold_index(ws, latest)
            decisions = ws.store.current_decisions()
            ds = ws.dataset()
            status, final = decision_state(rows, decisions)
            truth = ds.train.labels.numpy()[rows.idx] if ds.fully_labeled else None
            view = ReviewView(rows, index, status, final, ds.class_names, version, truth)
            self._views[name] = view
            return view

    def decide(self, name: str, positions, action: str, who: str, label: int | None = None,
               expect: str | None = None) -> int:
        """Record a decision for rows of the newest round (committed before this returns); with
        `expect`, only rows still in that state (what the reviewer saw). Returns how many."""
        from mpl_core.workspace.review import decide_rows
        view = self.review(name)
        if view is None:
            raise MPLStudioError("no pseudo-labels to review yet")
        positions = np.asarray(positions, dtype=np.int64)
        n = decide_rows(self.open(name), view.rows, positions, action, who, label, expect=expect)
        if n != len(positions):  # some were decided elsewhere first: read the state again next time
            with self._lock:
                view.version = -1
            return n
        with self._lock:  # keep the cached view in step without re-reading the store
            view.status[positions] = action
            view.final_label[positions] = -1 if action == "reject" else (
                int(label) if label is not None else view.rows.label[positions])
            view.version = self.open(name).store.decisions_version()
        return n

    def decide_by_threshold(self, name: str, action: str, thresholds, who: str,
                            classes: list[int] | None = None) -> int:
        """Accept pending rows at or above their class threshold, or reject those below it."""
        from mpl_core.workspace.review import select_by_threshold
        view = self.review(name)
        if view is None:
            raise MPLStudioError("no pseudo-labels to review yet")
        bound = {"above": thresholds} if action == "accept" else {"below": thresholds}
        positions = select_by_threshold(view.rows, None, classes=classes, status=view.status, **bound)
        return self.decide(name, positions, action, who)

    def label_by_hand(self, name: str, positions, label: int, who: str) -> int:
        return self.decide(name, positions, "manual", who, label)

    def undo(self, name: str, who: str | None = None) -> int:
        return self.open(name).store.undo_last(who)

    # --- images --------------------------------------------------------------------------------

    def thumbnails(self, name: str, pool_indices, scale: int = 3) -> list[np.ndarray]:
        """Images as (H, W) or (H, W, 3) uint8 arrays, enlarged by `scale` without smoothing."""
        images = self.open(name).dataset().train.images
        out = []
        for i in pool_indices:
            arr = images[int(i)].numpy()
            arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
            out.append(np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1))
        return out

    def thumbnail_uris(self, name: str, pool_indices, scale: int = 3) -> list[str]:
        """Thumbnails as PNG data URIs: the browser gets them inline with the page, no extra requests."""
        import base64

        from PIL import Image
        out = []
        for arr in self.thumbnails(name, pool_indices, scale):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
            out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
        return out

    def preview(self, name: str, per_class: int = 8) -> dict[str, list[int]]:
        """Pool indices of a few labeled images per class (for the data page's grid)."""
        ws = self.open(name)
        ds, split = ws.dataset(), ws.split()
        labels = ds.train.labels[split.labeled]
        return {c: split.labeled[labels == k][:per_class].tolist() for k, c in enumerate(ds.class_names)}

    def summary(self, name: str) -> dict:
        ws = self.open(name)
        ds, split = ws.dataset(), ws.split()
        report = ds.report
        return {"dataset": ds.name, "classes": ds.class_names, "sizes": split.sizes(),
                "test": len(ds.test) if ds.test is not None else 0, "image_size": ds.image_size,
                "channels": ds.in_channels, "data": ws.describe()["data"],
                "skipped": list(report.skipped) if report is not None else [],
                "report": report.summary_lines() if report is not None else []}

    # --- export --------------------------------------------------------------------------------

    def export_bytes(self, name: str, fmt: str, run_id: int | None = None) -> tuple[bytes, str]:
        """(file contents, file name) for a download button."""
        from mpl_core.workspace import export as ex
        ws = self.open(name)
        if fmt == "csv":
            return ex.csv_bytes(ws), f"{name}-labels.csv"
        if fmt == "imagefolder-zip":
            buf = io.BytesIO()
            ex.write_zip(ex.imagefolder_files(ws), buf)
            return buf.getvalue(), f"{name}-imagefolder.zip"
        if fmt == "label-studio":
            buf = io.BytesIO()
            ex.write_zip(ex.label_studio_files(ws), buf)
            return buf.getvalue(), f"{name}-label-studio.zip"
        if fmt == "checkpoint":
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                path = ex.export_checkpoint(ws, run_id, tmp)
                return path.read_bytes(), path.name
        raise MPLStudioError(f"unknown export format {fmt!r}")


def app_threads() -> int:
    """CPU threads for a job started from the app: all cores but one, which serves the pages."""
    import os
    return max(1, (os.cpu_count() or 2) - 1)


def default_run_config(preset: str = "quick-demo", algorithm: str = "mpl") -> RunConfig:
    from mpl_core.presets import apply_preset
    cfg = apply_preset(RunConfig(), preset)
    cfg.algorithm.name = algorithm
    return cfg
