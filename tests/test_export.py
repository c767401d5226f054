import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_review import labeled_ws  # noqa: F401 (fixture)

from mpl_core.config import EXPORT_FORMATS
from mpl_core.engine.checkpoint import load_checkpoint
from mpl_core.errors import MPLStudioError
from mpl_core.service.studio import Studio
from mpl_core.workspace.export import class_folder_names, image_name
from mpl_core.workspace.formats import FORMATS, export
from mpl_core.workspace.review import decide_rows


@pytest.fixture
def reviewed_ws(labeled_ws):  # noqa: F811
    rows = labeled_ws.store.pseudo_labels()
    decide_rows(labeled_ws, rows, [0, 1], "accept", "ana")
    decide_rows(labeled_ws, rows, [2], "reject", "ana")
    decide_rows(labeled_ws, rows, [3], "relabel", "bo", label=1 - int(rows.label[3]))
    return labeled_ws, rows


def test_csv_export_reads_back(reviewed_ws, tmp_path):
    ws, rows = reviewed_ws
    path = export(ws, "csv", tmp_path / "out" / "labels.csv")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    names = ws.dataset().class_names
    given = len(ws.split().labeled) + len(ws.split().val)
    assert len(table) == given + 40
    by_id = {r["sample_id"]: r for r in table}
    r0, r2, r3 = (by_id[rows.sample_ids[i]] for i in (0, 2, 3))
    assert r0["status"] == "accept" and r0["final_label"] == names[rows.label[0]] and r0["reviewer"] == "ana"
    assert r2["status"] == "reject" and r2["final_label"] == ""
    assert r3["status"] == "relabel" and r3["final_label"] == names[1 - rows.label[3]]
    assert r3["pseudo_label"] == names[rows.label[3]]
    assert float(r0["confidence"]) == pytest.approx(float(rows.confidence[0]), abs=1e-4)
    assert sum(r["status"] == "pending" for r in table) == 36


def test_imagefolder_zip_and_tree_read_back(reviewed_ws, tmp_path):
    ws, rows = reviewed_ws
    labeled = len(ws.split().labeled) + len(ws.split().val)
    zpath = export(ws, "imagefolder-zip", tmp_path / "labels.zip")
    with zipfile.ZipFile(zpath) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == labeled + 3  # 2 accepted + 1 relabeled; the rejected one is left out
        assert {n.split("/")[0] for n in pngs} == {"horizontal", "vertical"}
        relabeled = [n for n in pngs if n.endswith(image_name(rows.sample_ids[3], rows.idx[3]))]
        assert relabeled[0].split("/")[0] == ws.dataset().class_names[1 - rows.label[3]]
    tree = export(ws, "imagefolder", tmp_path / "tree")
    files = sorted(tree.rglob("*.png"))
    assert len(files) == len(pngs)
    pixels = np.asarray(Image.open(files[0]))
    assert pixels.shape == (16, 16) and pixels.dtype == np.uint8  # the source file, not the 28-px training copy
    original = ws.data_root / ws.data.dataset / ws.dataset().train.ids[int(files[0].name[:6])]
    assert files[0].read_bytes() == original.read_bytes()


def test_checkpoint_export_and_bad_format(reviewed_ws, tmp_path):
    ws, _ = reviewed_ws
    path = export(ws, "checkpoint", tmp_path / "ck")
    tensors, info = load_checkpoint(path)
    assert info["class_names"] == ["horizontal", "vertical"] and any(k.startswith("teacher.model") for k in tensors)
    with pytest.raises(MPLStudioError, match="format must be one of"):
        export(ws, "xml", tmp_path / "x")


def test_names_are_safe_and_unique():
    assert image_name("unlabeled/cat 01.png", 7) == "000007_unlabeled_cat_01.png"
    assert image_name("train/00012", 12) == "000012_train_00012.png"
    folders = class_folder_names(["T-shirt/top", "T-shirt top", "../x", ""])
    assert folders == ["T-shirt_top", "T-shirt_top_1", "x", "class_3"]


def test_one_table_of_formats_serves_the_cli_and_the_downloads(reviewed_ws, tmp_path):
    ws, _ = reviewed_ws
    assert tuple(FORMATS) == EXPORT_FORMATS  # the CLI's choices are the table's formats
    studio = Studio(ws.data_root)
    data, name = studio.export_bytes("tiny", "csv")
    assert name == "tiny-labels.csv" and data == export(ws, "csv", tmp_path / "labels.csv").read_bytes()
    for fmt, file_name in (("imagefolder-zip", "tiny-imagefolder.zip"), ("label-studio", "tiny-label-studio.zip")):
        data, name = studio.export_bytes("tiny", fmt)
        assert name == file_name and zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    data, name = studio.export_bytes("tiny", "checkpoint")
    assert name.startswith("tiny-run1-ckpt-") and name.endswith(".safetensors") and len(data) > 1000
    with pytest.raises(MPLStudioError, match="download imagefolder-zip"):
        studio.export_bytes("tiny", "imagefolder")
    with pytest.raises(MPLStudioError, match="format must be one of"):
        studio.export_bytes("tiny", "xml")


def test_exports_carry_the_estimated_precision_with_its_interval(reviewed_ws, tmp_path):
    import json
    ws, _ = reviewed_ws
    tree = export(ws, "imagefolder", tmp_path / "tree")
    summary = json.loads((tree / "precision.json").read_text())
    rows = {r["threshold"]: r for r in summary["thresholds"]}
    assert summary["round"] == ws.store.latest_round() and "90% interval" in summary["note"]
    low = rows[0.5]
    assert low["val_support"] > 0 and low["est_low"] <= low["est_precision"] <= low["est_high"]
    folder = export(ws, "label-studio", tmp_path / "ls")
    assert json.loads((folder.parent / "precision.json").read_text()) == summary  # beside tasks.json
