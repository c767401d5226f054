"""Exports against the real clients: a real Label Studio shows every exported image, and torchvision
reads the ImageFolder export.

    python bench/interop.py                     # Label Studio from PATH (pip install label-studio)
    python bench/interop.py --screenshot ls.png # and a Chromium picture of a task in Label Studio
    LABEL_STUDIO=/path/to/bin/label-studio python bench/interop.py

Makes a small workspace of generated images with pseudo-labels and decisions, exports it, starts
Label Studio (local files served from the export folder, as the export's README.txt says),
creates a project from label_config.xml, adds the Local files storage, imports tasks.json through
the API, and checks that every task's image URL answers 200 with a PNG. Then a colleague's
corrections are made through the API, exported as JSON and imported back as decisions, which one
undo takes back. The predictions and annotations are also checked with Label Studio's SDK
validator (LabelInterface), run by the Python that runs Label Studio. Where Label Studio is not
installed it says so and exits 0.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.workspace.formats import export  # noqa: E402
from mpl_core.workspace.label_studio import import_label_studio  # noqa: E402
from mpl_core.workspace.review import decide_rows  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

TOKEN = "mplstudio-interop-token"
CLASSES = ["T-shirt top", "Trouser", "Ankle boot"]  # spaces: ImageFolder folders must map back to the names
CHECKS: list[tuple[str, bool, str]] = []
SCREENSHOT = Path(sys.argv[sys.argv.index("--screenshot") + 1]) if "--screenshot" in sys.argv else None


def check(name: str, ok: bool, detail: str = "") -> bool:
    CHECKS.append((name, bool(ok), detail))
    return bool(ok)


def make_workspace(root: Path, per_class: int = 6, unlabeled: int = 60):
    """Own images (3 classes of coloured squares) with one round of pseudo-labels and some decisions."""
    rng = np.random.default_rng(0)
    for split, n in (("labeled", per_class), ("test", 4)):
        for k, name in enumerate(CLASSES):
            folder = root / "imgs" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(square(k, rng)).save(folder / f"{i}.png")
    (root / "imgs" / "unlabeled").mkdir()
    for i in range(unlabeled):
        Image.fromarray(square(i % 3, rng)).save(root / "imgs" / "unlabeled" / f"u{i:03d}.png")
    ws = create_workspace("interop", DataConfig(dataset="imgs", val_fraction=0.34), root)
    split = ws.split()
    probs = rng.dirichlet(np.ones(3) * 0.3, size=len(split.unlabeled)).astype(np.float32)
    run = ws.store.create_run("train", {"algorithm": {"name": "mpl"}})
    ids = [ws.dataset().train.ids[i] for i in split.unlabeled.tolist()]
    ws.store.add_pseudo_labels(run, "teacher", ids, split.unlabeled.numpy(), probs, {})
    rows = ws.store.pseudo_labels()
    decide_rows(ws, rows, range(0, 10), "accept", "ana")
    decide_rows(ws, rows, range(10, 15), "reject", "ana")
    decide_rows(ws, rows, [15, 16], "relabel", "bo", label=0)
    return ws


def square(k: int, rng) -> np.ndarray:
    img = np.full((32, 32, 3), 30, np.uint8)
    img[8:24, 8:24, k] = 200 + rng.integers(0, 50)
    return img


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A Label Studio server for this script: started, asked over its API with a token, stopped."""

    def __init__(self, exe: str, document_root: Path, data_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
               "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root)}
        self.log = open(data_dir / "label-studio.log", "w")
        self.proc = subprocess.Popen([exe, "start", "--no-browser", "--port", str(self.port), "--data-dir",
                                      str(data_dir), "--username", "interop@example.com", "--password",
                                      "interop-pass-1", "--user-token", TOKEN, "--enable-legacy-api-token"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300) -> float:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if urllib.request.urlopen(self.url + "/health/", timeout=3).status == 200:
                    return time.time() - t0
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"Label Studio did not answer within {timeout:.0f} s")

    def call(self, method: str, path: str, body=None) -> tuple[int, bytes, str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def json(self, method: str, path: str, body=None):
        status, data, _ = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def label_studio_checks(exe: str, ws, out: Path, work: Path) -> None:
    ls = LabelStudio(exe, out, work)
    try:
        print(f"Label Studio up in {ls.wait():.0f} s at {ls.url}")
        project = ls.json("POST", "/api/projects/", {"title": "MPL Studio interop",
                                                     "label_config": (out / "label_config.xml").read_text()})
        pid = project["id"]
        ls.json("POST", "/api/storages/localfiles/", {"project": pid, "path": str(out / "images"),
                                                      "use_blob_urls": False, "title": "images"})
        tasks = json.loads((out / "tasks.json").read_text())
        ls.json("POST", f"/api/projects/{pid}/import", tasks)
        project = ls.json("GET", f"/api/projects/{pid}/")
        check("tasks imported", project["task_number"] == len(tasks), f"{project['task_number']} of {len(tasks)}")
        served = ls.json("GET", f"/api/tasks/?project={pid}&page_size=1000")
        served = served["tasks"] if isinstance(served, dict) else served
        answers = [ls.call("GET", t["data"]["image"]) for t in served]
        good = sum(status == 200 and kind.startswith("image/png") and data[:8] == b"\x89PNG\r\n\x1a\n"
                   for status, data, kind in answers)
        check("every image URL answers 200 with a PNG", good == len(served), f"{good} of {len(served)}")
        n_pred = sum(t.get("total_predictions", len(t.get("predictions") or [])) for t in served)
        n_ann = sum(t.get("total_annotations", len(t.get("annotations") or [])) for t in served)
        check("predictions and annotations imported", n_pred == sum("predictions" in t for t in tasks)
              and n_ann == sum("annotations" in t for t in tasks), f"{n_pred} predictions, {n_ann} annotations")
        columns = json.dumps(ls.json("GET", f"/api/dm/columns?project={pid}"))
        check("status, pseudo_label and confidence are Data Manager columns (filter status = reject)",
              all(f'"id": "{c}"' in columns for c in ("status", "pseudo_label", "confidence")))
        if SCREENSHOT:
            screenshot(ls, pid, next(t for t in served if t["data"]["status"] == "relabel"), SCREENSHOT)
        round_trip(ls, pid, served, ws)
    finally:
        ls.stop()


def screenshot(ls: LabelStudio, pid: int, task: dict, path: Path) -> None:
    """Log in as a person would and photograph a task: image, prediction and annotation on screen."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import browser_page
    with browser_page(1280, 800) as page:
        page.goto(ls.url + "/user/login/")
        page.fill("input[name=email]", "interop@example.com")
        page.fill("input[name=password]", "interop-pass-1")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{ls.url}/projects/{pid}/data?task={task['id']}")
        page.wait_for_selector("img", timeout=60000)
        time.sleep(3)
        page.screenshot(path=str(path))
    print(f"screenshot of task {task['id']} in {path}")


def round_trip(ls: LabelStudio, pid: int, served: list[dict], ws) -> None:
    """A colleague relabels three tasks in Label Studio; its JSON export comes back as decisions."""
    names = ws.dataset().class_names
    pending = [t for t in served if t["data"]["status"] == "pending"][:3]
    for t in pending:
        other = names[(names.index(t["data"]["pseudo_label"]) + 1) % len(names)]
        ls.json("POST", f"/api/tasks/{t['id']}/annotations/", {"result": [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [other]}}]})
    status, exported, _ = ls.call("GET", f"/api/projects/{pid}/export?exportType=JSON")
    before = ws.store.current_decisions()
    summary = import_label_studio(ws, exported, who="label-studio")
    check("a Label Studio JSON export imports back", status == 200 and summary.decided["relabel"] == 3,
          "; ".join(summary.lines()))
    undone = ws.store.undo_last()
    after = ws.store.current_decisions()
    same = all(np.array_equal(before[k], after[k]) for k in ("idx", "action", "label"))
    check("one undo takes the import back", undone == 3 and same, f"{undone} decisions undone")


def sdk_checks(exe: str, out: Path) -> None:
    """Label Studio's own validator on every prediction and annotation, in Label Studio's Python."""
    python = Path(exe).resolve().parent / "python"
    code = ("import json,sys\nfrom label_studio_sdk.label_interface import LabelInterface\n"
            "li=LabelInterface(open(sys.argv[1]).read()); tasks=json.load(open(sys.argv[2])); bad=[]\n"
            "for t in tasks:\n for p in t.get('predictions',[]):\n  e=li.validate_prediction(p,return_errors=True)\n"
            "  bad += [] if e is True or e == [] else [(t['id'], e)]\n for a in t.get('annotations',[]):\n"
            "  bad += [] if li.validate_annotation(a) else [(t['id'], 'annotation')]\n"
            "print(json.dumps({'tasks': len(tasks), 'bad': bad[:5], 'n_bad': len(bad)}))\n")
    if not python.exists():
        check("SDK validator", False, f"no python beside {exe}")
        return
    r = subprocess.run([str(python), "-c", code, str(out / "label_config.xml"), str(out / "tasks.json")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        check("SDK validator", False, r.stderr.strip().splitlines()[-1] if r.stderr else "failed")
        return
    res = json.loads(r.stdout.strip().splitlines()[-1])
    check("SDK validator: predictions and annotations", res["n_bad"] == 0,
          f"{res['tasks']} tasks, {res['n_bad']} invalid {res['bad']}")


def imagefolder_checks(ws, work: Path) -> None:
    from torchvision.datasets import ImageFolder
    folder = export(ws, "imagefolder", work / "imagefolder")
    data = ImageFolder(str(folder))
    mapping = json.loads((folder / "classes.json").read_text())["folder_to_class"]
    split = ws.split()
    usable = len(split.labeled) + len(split.val) + 12  # given labels, 10 accepted and 2 relabeled
    check("torchvision ImageFolder loads the export", len(data) == usable and data[0][0].size == (32, 32),
          f"{len(data)} images of {usable} in {len(data.classes)} classes")
    check("classes.json maps every folder back to its class", sorted(mapping.values()) == sorted(CLASSES)
          and set(data.classes) <= set(mapping), f"{mapping}")


def main() -> int:
    exe = os.environ.get("LABEL_STUDIO") or shutil.which("label-studio")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ws = make_workspace(work)
        out = work / "ls-export"
        export(ws, "label-studio", out)
        imagefolder_checks(ws, work)
        if exe is None:
            print("Label Studio is not installed (pip install label-studio, or set LABEL_STUDIO to its "
                  "executable): only the ImageFolder checks ran.")
        else:
            sdk_checks(exe, out)
            label_studio_checks(exe, ws, out, work)
    print("\n| check | result | detail |\n|---|---|---|")
    for name, ok, detail in CHECKS:
        print(f"| {name} | {'pass' if ok else 'FAIL'} | {detail} |")
    return 0 if all(ok for _, ok, _ in CHECKS) else 1


if __name__ == "__main__":
    sys.exit(main())
