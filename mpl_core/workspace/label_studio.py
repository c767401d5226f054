"""Label Studio: an export that shows its images as exported, and its JSON export read back as decisions.

    files = label_studio_files(ws)                      # tasks.json, label_config.xml, README.txt, images/
    summary = import_label_studio(ws, export_json, who="ana")   # one batch: one undo takes it back

Images. A task's `image` is a URL that Label Studio's browser page fetches. By default it is a
Label Studio *local files* URL, `/data/local-files/?d=images/<file>.png`, which Label Studio
serves when it is started with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<the export folder>, and the project has a Local files
storage on <the export folder>/images (saved, no sync needed: the tasks come from tasks.json).
That is the set-up with the fewest steps for an export on the machine that runs Label Studio,
and the one the export's README.txt walks through. Anyone who serves the images themselves
(a web server, a bucket) gives their URL prefix instead (`image_prefix`).

Tasks. The model's pseudo-label is a prediction (model_version, score); accepted, relabeled and
hand-made labels are annotations; every task's data carries the sample id, pool index, review
status (`reject` marks a rejected pseudo-label), pseudo-label and confidence, which Label Studio's
Data Manager shows as columns to filter and sort by.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator
from xml.sax.saxutils import quoteattr

from mpl_core.errors import MPLStudioError
from mpl_core.workspace.export import export_rows, image_name, precision_summary
from mpl_core.workspace.media import export_image, export_suffix
from mpl_core.workspace.workspace import Workspace

LOCAL_FILES_PREFIX = "/data/local-files/?d=images/"  # served from the export folder as document root
CONTROL = "label"  # the <Choices> name, the from_name of every result
OBJECT = "image"  # the <Image> name, the to_name of every result


def label_studio_config(class_names: list[str]) -> str:
    """The labeling interface XML that matches the exported tasks."""
    choices = "\n".join(f"    <Choice value={quoteattr(n)}/>" for n in class_names)
    return (f'<View>\n  <Image name="{OBJECT}" value="$image"/>\n  <Choices name="{CONTROL}" toName="{OBJECT}" '
            f'choice="single" showInline="true">\n{choices}\n  </Choices>\n</View>\n')


def label_studio_tasks(ws: Workspace, image_prefix: str = LOCAL_FILES_PREFIX) -> list[dict]:
    """One task per pool sample with a pseudo-label or a decision."""
    image_prefix = _check_prefix(image_prefix)
    pl = ws.store.pseudo_labels()
    version = f"mpl-studio/{ws.name}/run-{pl.run_id}-{pl.model}-round-{pl.round}" if pl is not None else ""
    tasks, ds = [], ws.dataset()
    for n, row in enumerate(r for r in export_rows(ws) if r["split"] == "unlabeled"):
        file = image_name(row["sample_id"], row["pool_index"], export_suffix(ds, row["sample_id"]))
        task = {"id": n + 1, "data": {"image": image_prefix + file, "file": file, "sample_id": row["sample_id"],
                                      "pool_index": row["pool_index"], "status": row["status"],
                                      "pseudo_label": row["pseudo_label"], "confidence": row["confidence"]}}
        if row["pseudo_label"]:
            task["predictions"] = [{"model_version": version, "score": row["confidence"],
                                    "result": [_choice(row["pseudo_label"])]}]
        if row["final_label"]:
            task["annotations"] = [{"result": [_choice(row["final_label"])]}]
        tasks.append(task)
    return tasks


def _choice(label: str) -> dict:
    return {"from_name": CONTROL, "to_name": OBJECT, "type": "choices", "value": {"choices": [label]}}


def _check_prefix(prefix: str) -> str:
    prefix = (prefix or "").strip()
    if not prefix:
        raise MPLStudioError("give the URL prefix the images will be served under, e.g. https://host/images/")
    if not (prefix.startswith(("http://", "https://", "/", "s3://", "gs://", "azure-blob://"))):
        raise MPLStudioError(f"the image URL prefix must start with http://, https://, /, s3://, gs:// or "
                             f"azure-blob://, not {prefix!r}")
    return prefix


def label_studio_files(ws: Workspace, images: bool = True,
                       image_prefix: str = LOCAL_FILES_PREFIX) -> Iterator[tuple[str, bytes]]:
    """(relative path, contents): tasks.json, label_config.xml, README.txt and the images in images/."""
    tasks = label_studio_tasks(ws, image_prefix)
    ds = ws.dataset()
    yield "tasks.json", json.dumps(tasks, indent=1, ensure_ascii=False).encode("utf-8")
    yield "label_config.xml", label_studio_config(ds.class_names).encode("utf-8")
    yield "README.txt", readme(ws.name, len(tasks), image_prefix).encode("utf-8")
    if (summary := precision_summary(ws)) is not None:
        yield "precision.json", summary
    if images:
        for t in tasks:
            yield "images/" + t["data"]["file"], export_image(ds, t["data"]["pool_index"])


def readme(name: str, n_tasks: int, image_prefix: str) -> str:
    """How to load this export into Label Studio so that it shows the images."""
    head = (f"MPL Studio export of workspace {name!r} for Label Studio: {n_tasks} tasks.\n\n"
            "  tasks.json        the tasks: image URL, the model's pseudo-label as a prediction (model_version,\n"
            "                    score), accepted and corrected labels as annotations\n"
            "  label_config.xml  the labeling interface (one choice per class)\n"
            "  images/           the images the tasks show\n\n")
    columns = ("In the project's Data Manager, the columns status (pending, accept, reject, relabel, manual),\n"
               "pseudo_label and confidence can be filtered and sorted: status = reject shows the pseudo-labels a\n"
               "reviewer rejected.\n\n"
               "Bring corrections back: in Label Studio, Export > JSON, then in MPL Studio\n"
               "  python -m mpl_core import --workspace NAME --format label-studio export.json\n"
               "or the Export page's 'Import from Label Studio'. One undo takes the whole import back.\n")
    if image_prefix != LOCAL_FILES_PREFIX:
        return head + (f"The tasks point at {image_prefix}<file>: serve the files of images/ there (with CORS\n"
                       "allowed for Label Studio's address), then create a project with label_config.xml and import\n"
                       "tasks.json (Project > Import).\n\n") + columns
    return head + """Load it, with the images, in three steps on the machine that runs Label Studio:

1. Start Label Studio with this folder as the root of its local files (use this folder's absolute path):

     LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\
     LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/absolute/path/of/this/folder \\
     label-studio start

   (Docker: mount this folder, e.g. -v "$PWD":/label-studio/files, and set the document root to
   /label-studio/files.)

2. Create a project. Under Settings > Labeling Interface > Code, paste label_config.xml. Under
   Settings > Cloud Storage > Add Source Storage, choose "Local files", set the absolute local path to
   /absolute/path/of/this/folder/images, and click Save (not Sync: the tasks come from tasks.json).

3. Import tasks.json (Project > Import). The images, predictions and annotations appear.

Without step 1 or the storage of step 2, Label Studio answers 404 for every image.
Serving the images yourself instead: export again with an image URL prefix
(python -m mpl_core export --format label-studio --image-url-prefix https://host/images/ ...).

""" + columns


# --- reading a Label Studio export back ------------------------------------------------------------

@dataclass
class ImportSummary:
    tasks: int  # tasks in the file
    annotated: int  # tasks with a usable (not cancelled) annotation
    unchanged: int  # annotations that say what the workspace already has
    decided: dict  # action -> how many decisions were (or, in a dry run, would be) recorded
    dry_run: bool = False

    def lines(self) -> list[str]:
        recorded = sum(self.decided.values())
        parts = ", ".join(f"{n} {a}" for a, n in self.decided.items() if n)
        verb = "would be recorded" if self.dry_run else "recorded"
        return [f"{self.tasks} task(s), {self.annotated} with a label; {self.unchanged} unchanged",
                f"{recorded} decision(s) {verb}" + (f": {parts}" if parts else "")
                + ("; one undo takes them back" if recorded and not self.dry_run else "")]


def import_label_studio(ws: Workspace, data: bytes | str, who: str, dry_run: bool = False) -> ImportSummary:
    """Record the labels of a Label Studio JSON export (Export > JSON) as decisions, in one batch.

    A label equal to the sample's pseudo-label accepts it; another label relabels it (or labels it
    by hand where there is no pseudo-label). Labels the workspace already has are left alone. Every
    task is checked first: an unknown sample or class stops the import with nothing recorded."""
    tasks = _parse(data)
    ds, split = ws.dataset(), ws.split()
    pool = {ds.train.ids[i]: i for i in split.unlabeled.tolist()}
    classes = {n: k for k, n in enumerate(ds.class_names)}
    wanted, problems = [], []
    for n, task in enumerate(tasks):
        try:
            label = _latest_label(task, n)
            if label is None:
                continue
            sample_id, problem = _sample_of(task, pool)
        except (TypeError, AttributeError, KeyError, ValueError):
            problems.append(f"task {task.get('id', n + 1)}: its annotations are not in Label Studio's JSON format")
            continue
        if problem is None and label not in classes:
            problem = f"class {label!r} is not one of this workspace's classes ({', '.join(ds.class_names)})"
        if problem is not None:
            problems.append(f"task {task.get('id', n + 1)}: {problem}")
            continue
        wanted.append((sample_id, pool[sample_id], classes[label]))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise MPLStudioError("nothing imported: " + "; ".join(problems[:3]) + more
                             + ". Export the tasks from the project made from this workspace's export")
    return _record(ws, tasks, wanted, who, dry_run)


def _parse(data: bytes | str) -> list[dict]:
    try:
        tasks = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MPLStudioError(f"not a Label Studio JSON export ({exc}); in Label Studio use Export > JSON") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict)
                                              for t in tasks):
        raise MPLStudioError("not a Label Studio JSON export: expected a list of tasks, each with 'data'; "
                             "in Label Studio use Export > JSON (not JSON-MIN or CSV)")
    return tasks


def _latest_label(task: dict, n: int) -> str | None:
    """The class of the task's newest annotation that was not cancelled (skipped), or None."""
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    done.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), str(a.get("id") or "")))
    for annotation in reversed(done):
        for region in annotation.get("result") or []:
            if isinstance(region, dict) and region.get("type") == "choices" and region.get("from_name") == CONTROL:
                choices = (region.get("value") or {}).get("choices") or []
                if not isinstance(choices, list):
                    raise TypeError("choices")
                if len(choices) != 1:
                    raise MPLStudioError(f"task {task.get('id', n + 1)} has {len(choices)} classes chosen; "
                                         "one per image is needed")
                return str(choices[0])
    return None


def _sample_of(task: dict, pool: dict[str, int]) -> tuple[str | None, str | None]:
    """(sample id, None) or (None, what is wrong)."""
    sample_id = task["data"].get("sample_id")
    if sample_id is not None and not isinstance(sample_id, str):
        raise TypeError("sample_id")
    if sample_id is None:
        return None, "no sample_id in its data (was it exported by MPL Studio?)"
    if sample_id not in pool:
        return None, f"sample {sample_id!r} is not in this workspace's unlabeled pool"
    if "pool_index" in task["data"] and task["data"]["pool_index"] != pool[sample_id]:
        return None, f"sample {sample_id!r} has pool index {task['data']['pool_index']}, not {pool[sample_id]}"
    return sample_id, None


def _record(ws: Workspace, tasks: list[dict], wanted: list[tuple[str, int, int]], who: str,
            dry_run: bool) -> ImportSummary:
    dec, pl = ws.store.current_decisions(), ws.store.pseudo_labels()
    current = {int(i): (a, int(lab)) for i, a, lab in zip(dec["idx"], dec["action"], dec["label"])}
    pseudo = {int(i): int(lab) for i, lab in zip(pl.idx, pl.label)} if pl is not None else {}
    samples, actions, labels = [], [], []
    for sample_id, idx, label in wanted:
        if idx in current and current[idx][0] != "reject" and current[idx][1] == label:
            continue  # the workspace already has this label
        samples.append((sample_id, idx))
        actions.append("accept" if pseudo.get(idx) == label else ("relabel" if idx in pseudo else "manual"))
        labels.append(label)
    decided = {a: actions.count(a) for a in ("accept", "relabel", "manual")}
    if samples and not dry_run:
        # not `seen`: the export writes every accepted label as an annotation, bulk accepts too, so an
        # unchanged one coming back says nothing of whether a person looked at it
        ws.store.decide(samples, actions, labels, who)
    return ImportSummary(len(tasks), len(wanted), len(wanted) - len(samples), decided, dry_run)
