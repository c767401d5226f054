"""Malformed input: every case of the generated corpus through the CLI, the import and the upload.

Each gets a clear message or is skipped and listed; nothing crashes, hangs or writes outside
the workspace (and the uploads folder the app stores zips in).
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from malformed import SMALL_LIMITS, Case, build_corpus, snapshot, zip_folder
from mpl_core.config import DataConfig
from mpl_core.data import imagefolder
from mpl_core.data.imagefolder import ImportLimits
from mpl_core.errors import MPLStudioError
from mpl_core.service.studio import Studio

ROOT = Path(__file__).resolve().parents[1]
EXPECTS = ("ok", "skip", "refuse")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    top = tmp_path_factory.mktemp("malformed")
    data_root = top / "data"
    cases = build_corpus(data_root / "corpus", top / "outside")
    return top, data_root, cases


@pytest.fixture
def small_limits(monkeypatch):
    """The app's import with caps small enough that the bombs in the corpus stay small."""
    monkeypatch.setattr(imagefolder, "DEFAULT_LIMITS", ImportLimits(**SMALL_LIMITS))


def test_the_corpus_has_forty_cases_of_every_kind(corpus):
    _, _, cases = corpus
    assert len(cases) >= 40
    kinds = {e: sum(c.expect == e for c in cases) for e in EXPECTS}
    assert all(n >= 5 for n in kinds.values()), kinds
    assert sum(c.zipped for c in cases) >= 10


def _check(case: Case, skipped: list[tuple[str, str]], problem: str | None) -> None:
    """One case's outcome against what it expects."""
    reasons = dict(skipped)
    if case.expect == "refuse":
        assert problem is not None and case.needle in problem, (case.name, problem)
        return
    assert problem is None, (case.name, problem)
    if case.expect == "skip":
        assert case.target in reasons, (case.name, skipped)
        assert case.needle in reasons[case.target], (case.name, reasons[case.target])
    elif case.target:
        assert case.target not in reasons, (case.name, reasons.get(case.target))


def test_cli_inspect_gives_every_case_a_report_and_no_traceback(corpus):
    top, _, cases = corpus
    proc = subprocess.run([sys.executable, "-m", "mpl_core", "inspect", *(str(c.path) for c in cases),
                           "--max-files", str(SMALL_LIMITS["max_files"]),
                           "--max-total-mb", str(SMALL_LIMITS["max_total_bytes"] // 2**20)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr  # some cases are refused
    assert "Traceback" not in proc.stderr + proc.stdout
    reports = ("\n" + proc.stdout).split("\nsource: ")[1:]
    assert len(reports) == len(cases)
    for case, text in zip(cases, reports):
        assert text.startswith(str(case.path)), (case.name, text[:200])
        lines = text.splitlines()
        verdict = next(line for line in lines if line.startswith("usable: "))
        problem = verdict[len("usable: no: "):] if verdict.startswith("usable: no") else None
        skipped = [tuple(line[2:].split(": ", 1)) for line in lines if line.startswith("  ") and ": " in line]
        printable = Case(case.name, case.path, case.expect, case.needle,
                         imagefolder._printable(case.target), case.zipped)
        _check(printable, skipped, problem)


def _import(studio: Studio, name: str, dataset: str) -> tuple[list, str | None]:
    """Create a workspace as the Data page does; (skipped files, refusal message). Never hangs."""
    out: dict = {}

    def run():
        try:
            studio.create(name, DataConfig(dataset=dataset))
            out["skipped"] = studio.summary(name)["skipped"]
        except MPLStudioError as exc:
            out["problem"] = str(exc)
        except BaseException as exc:  # anything else is a crash: report it as the failure
            out["crash"] = repr(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), f"{name}: the import hung"
    assert "crash" not in out, f"{name}: {out.get('crash')}"
    return out.get("skipped", []), out.get("problem")


def _only_expected_writes(before: set[str], after: set[str], data_root: Path) -> None:
    allowed = [str(data_root / "workspaces"), str(data_root / "uploads")]
    stray = sorted(p for p in after - before if not any(p == a or p.startswith(a + "/") for a in allowed))
    assert stray == [], stray


def test_import_from_a_folder_or_zip_under_the_data_root(corpus, small_limits):
    top, data_root, cases = corpus
    studio = Studio(data_root)
    before = snapshot(top)
    for i, case in enumerate(cases):
        rel = case.path.relative_to(data_root).as_posix()
        skipped, problem = _import(studio, f"import-{i:02d}", rel)
        _check(case, skipped, problem)
        if problem is not None:  # a refused import leaves no half-made workspace behind
            assert not (data_root / "workspaces" / f"import-{i:02d}").exists()
    _only_expected_writes(before, snapshot(top), data_root)
    assert not (top / "evil.png").exists() and not (data_root / "evil.png").exists()


def test_upload_through_the_app_path(corpus, small_limits, tmp_path):
    """What the Data page does with an uploaded zip: save it under uploads/, then import it."""
    top, data_root, cases = corpus
    studio = Studio(data_root)
    before = snapshot(top)
    for i, case in enumerate(cases):
        if case.zipped:
            payload = case.path.read_bytes()
        elif case.path.is_dir() and case.name not in ("symlink-outside", "symlink-folder-outside", "fifo",
                                                      "symlink-loop", "symlink-dangling", "symlink-inside-is-fine"):
            payload = zip_folder(case.path, tmp_path / f"{case.name}.zip").read_bytes()  # a user zips the folder
        else:
            continue  # links, FIFOs and missing paths do not survive being zipped by a user
        name = f"upload-{i:02d}"
        skipped, problem = _import(studio, name, studio.save_upload(name, payload))
        _check(case, skipped, problem)
    _only_expected_writes(before, snapshot(top), data_root)


def test_upload_never_overwrites_the_zip_of_an_existing_workspace(corpus, tmp_path):
    _, _, cases = corpus
    good = next(c for c in cases if c.name == "zip-ok-with-wrapping-folder")
    studio = Studio(tmp_path)
    path = studio.save_upload("mine", good.path.read_bytes())
    studio.create("mine", DataConfig(dataset=path))
    with pytest.raises(MPLStudioError, match="already exists"):
        studio.save_upload("mine", b"a different zip")
    assert (tmp_path / path).read_bytes() == good.path.read_bytes()
    assert studio.summary("mine")["sizes"]["unlabeled"] == 4


def test_folder_paths_outside_the_data_root_are_refused(corpus):
    top, data_root, _ = corpus
    studio = Studio(data_root)
    for path in ("../outside", str(top / "outside"), "corpus/../../outside", "/etc"):
        with pytest.raises(MPLStudioError, match="outside the data folder"):
            studio.create("escape", DataConfig(dataset=path))
    assert not (data_root / "workspaces" / "escape").exists()


def test_class_names_keep_their_characters(corpus):
    _, data_root, cases = corpus
    case = next(c for c in cases if c.name == "class-names-unicode-html-markdown")
    report, ds = imagefolder.inspect_image_folder(case.path)
    assert ds.class_names == sorted(["ankle boot", "chaussure été", "<img src=x onerror=alert(1)>",
                                     "**bold** [link](x.html)"])
