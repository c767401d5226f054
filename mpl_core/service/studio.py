"""The app's one entry into the library: open workspaces, their jobs, review sessions and media.

    studio = Studio(data_root)                   # the app keeps one per process
    studio.start(name, "train", cfg=cfg)         # one job per workspace; a second tab sees it
    view = studio.review(name)                   # pseudo-labels, threshold index, statuses
    studio.decide(name, positions, "accept", who="ana")

No Streamlit here: the app wraps a Studio in `st.cache_resource`, pages call its methods and
poll job status. Studio holds state and delegates the work: review state and decisions to a
ReviewSession per workspace (workspace/review_session.py), jobs to service/work.py, images to
workspace/media.py and exports to workspace/export.py's table of formats.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from mpl_core.config import DataConfig, RunConfig
from mpl_core.engine.backbones import HostProbe, WeightsStatus
from mpl_core.errors import MPLStudioError
from mpl_core.presets import DEMO_BUDGET_S, DEMO_FINE_TUNE, DEMO_TARGET_PRECISION
from mpl_core.service import demo, work
from mpl_core.service.job import BACKGROUND_NICE, TrainingJob
from mpl_core.service.lock import describe_holder, lock_is_held, read_holder
from mpl_core.service.run_time import RunTime, RunTimes
from mpl_core.service.start_weights import DefaultStart, default_start, require_start_weights, start_weights
from mpl_core.workspace import media, pace
from mpl_core.workspace.attach import attach_checkpoint
from mpl_core.workspace.formats import downloads, export_bytes
from mpl_core.workspace.label_studio import LOCAL_FILES_PREFIX, import_label_studio
from mpl_core.workspace.review_session import ReviewSession, ReviewView
from mpl_core.workspace.validation import ValidationQueue, split_outlook
from mpl_core.workspace.workspace import (
    WORKSPACE_FILE,
    Workspace,
    check_name,
    create_workspace,
    inside,
    list_workspaces,
    open_workspace,
    workspaces_root,
)

URI_CACHE = 20_000  # images kept encoded per workspace (about 1 KB each at 28 px)
IDLE_AFTER_S = 5.0  # seconds without a page interaction after which a job may take every core

class Studio:
    """Process-wide state of the app: thread-safe, one instance per server process."""

    def __init__(self, data_root: str | Path):
        self.data_root = Path(data_root)
        self._lock = threading.RLock()
        self._workspaces: dict[str, Workspace] = {}
        self._jobs: dict[str, TrainingJob] = {}
        self._sessions: dict[str, ReviewSession] = {}
        self._uris: dict[str, dict[int, str]] = {}  # workspace -> pool index -> PNG data URI
        self._zooms: dict[tuple[str, int], dict] = {}  # (workspace, pool index) -> the lightbox's source image
        self._last_interaction = time.monotonic()
        self.idle_after_s = IDLE_AFTER_S
        self.weights_probe = HostProbe()  # whether ImageNet weights can be downloaded, asked at most once a minute
        self._run_times = RunTimes()  # the Train page's probes of a run's time, and their timings

    # --- the CPU share of jobs -----------------------------------------------------------------

    def touch(self) -> None:
        """A person did something in the app (the pages call it; their polling does not)."""
        self._last_interaction = time.monotonic()

    def job_threads(self) -> int:
        """CPU threads for a job now: every core while no one has used the app for idle_after_s
        seconds, else all but one, so that the pages answer at once. Asked between steps."""
        idle = time.monotonic() - self._last_interaction >= self.idle_after_s
        return usable_cores() if idle else app_threads()

    # --- workspaces ----------------------------------------------------------------------------

    def workspaces(self) -> list[dict]:
        return list_workspaces(self.data_root)

    def create(self, name: str, data: DataConfig, on_progress=None) -> Workspace:
        """A new workspace; own images are imported now (on_progress(done, total) as they decode),
        so that a bad folder is an error here, not later in a job."""
        data.seed = int(data.seed)
        ws = create_workspace(name, data, self.data_root)
        try:
            ws.dataset(on_progress)
            ws.split()
        except BaseException:  # a bad folder, or the page's script stopped midway: no half-made workspace
            ws.store.close()
            shutil.rmtree(ws.root, ignore_errors=True)
            raise
        with self._lock:
            self._workspaces[name] = ws
        return ws

    def set_image_size(self, name: str, image_size: int, on_progress=None) -> None:
        """Own images: train at another size from now on (imported again at that size)."""
        if lock_is_held(self.open(name).lock_path):
            raise MPLStudioError("a job is running in this workspace; stop it before changing the training size")
        self.open(name).set_image_size(image_size, on_progress)
        with self._lock:
            self._uris.pop(name, None)
            self._sessions.pop(name, None)

    def weights_file(self, path: str) -> str:
        """A weights file typed on the Train page: it must be under the data folder and exist."""
        resolved = inside(path.strip(), self.data_root)
        if not resolved.is_file():
            raise MPLStudioError(f"no weights file {path!r} under {self.data_root}; copy it there first")
        return str(resolved)

    def start_weights(self, name: str, **settings) -> list[WeightsStatus]:
        """Whether each model of a run with these settings (model, student, weights, algorithm) has its
        start weights at hand: cached, downloadable or unreachable; a file there or missing. No download."""
        return start_weights(self.open(name), self.weights_probe, **settings)

    def default_start(self, name: str) -> DefaultStart:
        """The start the pages offer first: ImageNet weights, or from scratch with a note where they
        cannot be had (see service/start_weights.py)."""
        return default_start(self.open(name), self.weights_probe)

    def run_time(self, name: str, cfg: RunConfig) -> RunTime:
        """What is known of how long cfg's run would take in this workspace, before Start; never waits:
        where nothing is, a probe of a few steps starts in a thread of its own (the page polls), unless a
        job runs here (see service/run_time.py). The probe takes the cores a job would while no one uses
        the pages."""
        ws = self.open(name)
        return self._run_times.get(ws, cfg, busy=lock_is_held(ws.lock_path), threads=usable_cores())

    def save_upload(self, name: str, data: bytes) -> str:
        """Store an uploaded dataset zip as uploads/<name>.zip; returns its path in the data root.

        Refused when the workspace exists: its zip is its data, and overwriting it would change
        a workspace that already has runs and decisions.
        """
        if (workspaces_root(self.data_root) / check_name(name) / WORKSPACE_FILE).exists():
            raise MPLStudioError(f"workspace {name!r} already exists; pick another name for the new data")
        target = self.data_root / "uploads" / f"{name}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # a failed write (full disk) leaves no half zip under the real name
        return str(target.relative_to(self.data_root))

    def open(self, name: str) -> Workspace:
        with self._lock:
            if name not in self._workspaces:
                ws = open_workspace(name, self.data_root)
                work.recover(ws)
                self._workspaces[name] = ws
            return self._workspaces[name]

    # --- jobs ----------------------------------------------------------------------------------

    def job(self, name: str) -> TrainingJob | None:
        """The job started from this process for the workspace (running or finished), or None."""
        with self._lock:
            return self._jobs.get(name)

    def start(self, name: str, kind: str, **kwargs) -> TrainingJob:
        """Start a job: kind = train, resume, pseudo_label, retrain or demo."""
        ws = self.open(name)
        cfgs = [key for key in ("cfg", "retrain_cfg", "review_cfg", "full_retrain_cfg", "baseline_cfg")
                if kwargs.get(key) is not None]
        chosen = any(kwargs[key].train.threads for key in cfgs)
        for key in cfgs:  # at the click, not seconds later in the job
            require_start_weights(ws, kwargs[key], self.weights_probe)
        for key in cfgs:
            if not kwargs[key].train.threads:
                kwargs[key].train.threads = app_threads()  # until the first step asks job_threads
        self._run_times.cancel()  # a probe of a run's time would slow the job down and be slowed by it
        nice = BACKGROUND_NICE  # the pages come first: see job.BACKGROUND_NICE
        starters = {"train": lambda: work.start_training(ws, kwargs["cfg"], nice=nice,
                                                         labels_alone=kwargs.get("labels_alone", False)),
                    "resume": lambda: work.start_training(ws, run_id=kwargs["run_id"], nice=nice),
                    "pseudo_label": lambda: work.start_pseudo_labeling(ws, kwargs.get("run_id"),
                                                                       kwargs.get("model", "auto"), nice=nice),
                    "retrain": lambda: work.start_retrain(ws, kwargs["cfg"], nice=nice),
                    "demo": lambda: demo.start_demo(ws, kwargs["cfg"], kwargs["retrain_cfg"], nice=nice,
                                                    review_cfg=kwargs.get("review_cfg"),
                                                    full_retrain_cfg=kwargs.get("full_retrain_cfg"),
                                                    baseline_cfg=kwargs.get("baseline_cfg"),
                                                    budget_s=kwargs.get("budget_s", DEMO_BUDGET_S),
                                                    target_precision=kwargs.get("target_precision",
                                                                               DEMO_TARGET_PRECISION),
                                                    fine_tune=kwargs.get("fine_tune", DEMO_FINE_TUNE))}
        if kind not in starters:
            raise MPLStudioError(f"unknown job kind {kind!r}")
        with self._lock:
            job = self.adopt(name, starters[kind]())
        if not chosen:  # threads a person set stay as set
            job.control.threads = self.job_threads
        return job

    def adopt(self, name: str, job: TrainingJob) -> TrainingJob:
        """Make a job started elsewhere in this process (a script, a test) the workspace's job, as if
        start() had started it: the pages show and control it."""
        with self._lock:
            self._jobs[name] = job
        return job

    def runs(self, name: str) -> list[dict]:
        return self.open(name).store.runs()

    def review_pace(self, name: str) -> dict[str, pace.Pace]:
        """Each person's seconds a decision in this workspace, from the decisions they saved
        looking at the images (see pace.py); the simulated reviewer is left out."""
        return pace.by_reviewer(self.open(name).store.seen_saves())

    def team_pace(self, name: str) -> pace.Pace:
        """Every person's review time and decisions in this workspace together (see review_pace)."""
        return pace.overall(self.review_pace(name))

    def review_behind_runs(self, name: str) -> dict[int, pace.Pace]:
        """Per run: the decisions people made looking at the images before the run read its labels
        (a retrain round: when it last read them, as a resumed round reads them again; else when it
        was created), and the time they took, every reviewer's together: what that review bought."""
        store = self.open(name).store
        runs = store.runs()
        untils = [r["metrics"].get("reviewed_at", r["created"]) for r in runs]
        behind = pace.before_each(store.seen_saves(), untils)
        return {r["id"]: p for r, p in zip(runs, behind)}

    def trained_on_pool(self, name: str, run_id: int) -> int | None:
        """How many pool images a run trained on with labels accepted or given in review (a retrain
        round; 0 for an MPL run; None for a retrain round stopped before it recorded them).
        Pseudo-labels from such a run are estimated from validation images alike, but its pending
        pool images are what earlier rounds left: harder than the average."""
        run = self.open(name).store.run(run_id)
        metrics = run["metrics"] or {}
        if run["kind"] == "retrain" and "labels_accepted" not in metrics:
            return None
        return int(metrics.get("labels_accepted", 0)) + int(metrics.get("labels_human", 0))

    def fine_tune_source(self, name: str) -> dict | None:
        """{"run_id", "starts": {"student", "teacher"}}: the settings with which a retrain round
        fine-tunes a model of the run that made the newest pseudo-labels (see work.fine_tune_source),
        or None."""
        return work.fine_tune_source(self.open(name))

    def outside_job(self, name: str) -> dict | None:
        """A job another process runs on the workspace (the CLI, torchrun), or None: who runs it and
        how far its run is, from the metrics it logs to the store."""
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
        ws = self.open(name)
        if not path.strip():
            raise MPLStudioError("type the path of a checkpoint (.safetensors) or run folder inside the data folder")
        return attach_checkpoint(ws, inside(path.strip(), self.data_root))

    def metric_rows(self, name: str, run_id: int) -> list[dict]:
        return self.open(name).store.metric_rows(run_id)

    # --- review (see ReviewSession) ------------------------------------------------------------

    def review(self, name: str) -> ReviewView | None:
        """The newest round's review state (cached per round and decisions version), or None."""
        return self._session(name).view()

    def latest_round(self, name: str) -> int | None:
        """The newest pseudo-label round: a page that saw an older one redraws when this changes."""
        return self._session(name).latest_round()

    def decide(self, name: str, positions, action: str, who: str, label: int | Sequence[int] | None = None,
               expect: str | Sequence[str] | None = None, seen: bool = False) -> int:
        """Record a decision for rows of the newest round in one transaction; with `expect`, only
        rows still in that state (what the reviewer saw). `seen`: a person looked at each (a page's
        tiles; see Store.decide), unlike decide_by_threshold's. Returns how many."""
        return self._session(name).decide(positions, action, who, label, expect=expect, seen=seen)

    def decide_by_threshold(self, name: str, action: str, thresholds, who: str,
                            classes: list[int] | None = None) -> int:
        """Accept pending rows at or above their class threshold, or reject those below it."""
        return self._session(name).decide_by_threshold(action, thresholds, who, classes)

    def label_by_hand(self, name: str, positions, labels: int | Sequence[int], who: str) -> int:
        """Manual labels for rows (the labeling queue): one class for all or one per row, in one
        transaction: one undo takes them all back, and a bad class saves none of them."""
        return self._session(name).label_by_hand(positions, labels, who)

    def undo(self, name: str, who: str | None = None) -> int:
        return self._session(name).undo(who)

    def as_seen_by(self, name: str, positions, shown: Sequence[str], who: str) -> list[str]:
        """Rows' states as `who` saw them: drawn, or changed since by their own decisions."""
        return self._session(name).as_seen_by(positions, shown, who)

    def apply_review_batch(self, name: str, batch: dict, who: str) -> dict:
        """The review grid's keyed operations (decisions and undos) in order: see ReviewSession.apply."""
        return self._session(name).apply(batch, who)

    def review_tiles(self, name: str, positions) -> list[dict]:
        """The tiles of the review grid: each row's view fields, its image as a data URI at its own
        size (the browser fits it to the tile), and the history of decisions on its sample."""
        view = self.review(name)
        if view is None:
            return []
        tiles = view.tiles(np.asarray(positions, dtype=np.int64))
        indices = [t["pool_index"] for t in tiles]
        uris, dataset = self._image_uris(name, indices), self.open(name).dataset()
        notes = media.source_notes(dataset, indices)
        history = self.sample_history(name, [t["sample_id"] for t in tiles])
        for tile, uri, note in zip(tiles, uris, notes):
            tile["image"], tile["note"], tile["zoomable"] = uri, note, dataset.media is not None
            tile["history"] = history[tile["sample_id"]]
        return tiles

    def review_state(self, name: str, round_, positions) -> dict:
        """What a grid page needs after its decisions: {"round", "counts", "tiles"}, the tiles being
        each row's status, label and history as stored now; none unless `round_` is still the newest
        (positions are rows of one round). Positions that are not rows of it are left out."""
        view = self.review(name)
        if view is None:
            return {"round": None, "counts": None, "tiles": []}
        out = {"round": int(view.rows.round), "counts": view.counts(), "tiles": []}
        if round_ != out["round"] or not isinstance(positions, list):
            return out
        ok = [p for p in positions if isinstance(p, int) and 0 <= p < len(view.rows)][:1000]
        history = self.sample_history(name, [view.rows.sample_ids[p] for p in ok])
        out["tiles"] = [{"position": p, "status": str(view.status[p]), "final_label": int(view.final_label[p]),
                         "history": history[view.rows.sample_ids[p]]} for p in ok]
        return out

    def sample_history(self, name: str, sample_ids: list[str]) -> dict[str, list[dict]]:
        """Every decision on these samples, oldest first, with its class name (the lightbox's list)."""
        names = self.open(name).dataset().class_names
        history = self.open(name).store.history(sample_ids)
        return {s: [{**h, "label_name": names[h["label"]] if 0 <= h["label"] < len(names) else ""} for h in hs]
                for s, hs in history.items()}

    def validation_queue(self, name: str) -> ValidationQueue:
        """The workspace's validation queue: a random sample of the pool to label for validation."""
        return ValidationQueue(self.open(name), self._session(name))

    def _session(self, name: str) -> ReviewSession:
        ws = self.open(name)
        with self._lock:
            if name not in self._sessions:
                self._sessions[name] = ReviewSession(ws)
            return self._sessions[name]

    # --- images --------------------------------------------------------------------------------

    def thumbnails(self, name: str, pool_indices, scale: int = 3) -> list[np.ndarray] | list[bytes]:
        """Images for st.image: own images' cached thumbnails (file bytes), else (H, W) or (H, W, 3)
        uint8 arrays enlarged by `scale` without smoothing."""
        dataset = self.open(name).dataset()
        if dataset.media is not None:
            return dataset.media.thumbnails([int(i) for i in pool_indices])
        return media.thumbnails(dataset.train.images, pool_indices, scale)

    def zoom_image(self, name: str, pool_index: int) -> dict:
        """The lightbox's image: {"image": a data URI of the source file, up to 1600 px, transparent ones
        as PNG with their alpha; "width", "height": its own size in pixels}. The last few are kept, since
        every redraw while the lightbox is open sends it again."""
        key = (name, int(pool_index))
        with self._lock:
            if key in self._zooms:
                return self._zooms[key]
        zoom = media.large_image(self.open(name).dataset(), pool_index)
        with self._lock:
            self._zooms[key] = zoom
            while len(self._zooms) > 8:
                del self._zooms[next(iter(self._zooms))]
        return zoom

    def _image_uris(self, name: str, pool_indices: list[int]) -> list[str]:
        """Images as PNG data URIs, encoded once per process: the grid redraws after every decision."""
        with self._lock:
            cache = self._uris.setdefault(name, {})
            missing = [i for i in pool_indices if i not in cache]
        if missing:
            fresh = dict(zip(missing, media.display_uris(self.open(name).dataset(), missing)))
            with self._lock:
                if len(cache) + len(fresh) > URI_CACHE:  # a bounded cache: forget the oldest
                    for key in list(cache)[:len(cache) + len(fresh) - URI_CACHE]:
                        del cache[key]
                cache.update(fresh)
        with self._lock:
            return [cache.get(i) or media.display_uris(self.open(name).dataset(), [i])[0] for i in pool_indices]

    def preview(self, name: str, per_class: int = 8) -> dict[str, list[int]]:
        """Pool indices of a few labeled images per class (for the data page's grid)."""
        ws = self.open(name)
        ds, split = ws.dataset(), ws.split()
        labels = ds.train.labels[split.labeled]
        return {c: split.labeled[labels == k][:per_class].tolist() for k, c in enumerate(ds.class_names)}

    def summary(self, name: str) -> dict:
        """The Data page's facts: sizes, the split per class (train / validation: `per_class`) and what
        the validation images can say of the precision of pseudo-labels (`validation`, an Outlook)."""
        ws = self.open(name)
        ds, split = ws.dataset_and_split()
        report = ds.report
        k = ds.num_classes
        train, val = (np.bincount(ds.train.labels[part].numpy(), minlength=k)[:k]
                      for part in (split.labeled, split.val))
        per_class = [{"class": c, "train": int(t), "validation": int(v)} for c, t, v in zip(ds.class_names, train, val)]
        return {"dataset": ds.name, "classes": ds.class_names, "sizes": split.sizes(),
                "per_class": per_class, "validation": split_outlook(val.tolist()),
                "test": len(ds.test) if ds.test is not None else 0, "image_size": ds.image_size,
                "channels": ds.in_channels, "data": ws.describe()["data"], "own_images": ds.media is not None,
                "native": report.native_line() if report is not None else "",
                "skipped": list(report.skipped) if report is not None else [],
                "report": report.summary_lines() if report is not None else []}

    # --- export --------------------------------------------------------------------------------

    @staticmethod
    def export_formats() -> dict[str, tuple[str, str]]:
        """The download formats: name -> (title, MIME type)."""
        return downloads()

    def export_bytes(self, name: str, fmt: str, run_id: int | None = None,
                     image_prefix: str | None = None) -> tuple[bytes, str]:
        """(file contents, file name) for a download button; image_prefix: where Label Studio finds
        the images (None: its local files, as the export's README.txt explains)."""
        return export_bytes(self.open(name), fmt, run_id, image_prefix or LOCAL_FILES_PREFIX)

    def import_label_studio(self, name: str, data: bytes, who: str, dry_run: bool = False) -> list[str]:
        """Record a Label Studio JSON export's labels as one batch of decisions; what happened, in words."""
        return import_label_studio(self.open(name), data, who, dry_run).lines()  # the view sees the new version


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container's cpuset sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def app_threads() -> int:
    """CPU threads for a job started from the app while someone uses it: all cores but one, which
    serves the pages."""
    return max(1, usable_cores() - 1)
