"""The Label Studio export against its own labeling config, and Label Studio's JSON export read back.

The tasks are checked the way Label Studio's SDK validator checks predictions and annotations
(`LabelInterface.validate_prediction`): every region names the config's control and object, has
its type, and chooses one of its classes. The SDK itself is not a test dependency (hundreds of MB);
bench/interop.py runs it, and a real Label Studio, where they are installed."""
import copy
import json
import xml.etree.ElementTree as ET

import pytest
from PIL import Image
from test_export import reviewed_ws  # noqa: F401 (fixture)
from test_review import labeled_ws  # noqa: F401 (fixture)

from mpl_core.errors import MPLStudioError
from mpl_core.workspace.formats import export
from mpl_core.workspace.label_studio import LOCAL_FILES_PREFIX, import_label_studio


def config_of(xml: str) -> dict:
    root = ET.fromstring(xml)
    image, choices = root.find("Image"), root.find("Choices")
    return {"object": image.get("name"), "var": image.get("value").lstrip("$"), "control": choices.get("name"),
            "to": choices.get("toName"), "classes": [c.get("value") for c in choices.findall("Choice")]}


def region_problems(region: dict, cfg: dict) -> list[str]:
    problems = []
    if (region.get("from_name"), region.get("to_name"), region.get("type")) != (cfg["control"], cfg["to"], "choices"):
        problems.append(f"names/type {region.get('from_name')}, {region.get('to_name')}, {region.get('type')}")
    chosen = region.get("value", {}).get("choices", [])
    if len(chosen) != 1 or chosen[0] not in cfg["classes"]:
        problems.append(f"choices {chosen}")
    return problems


def task_problems(task: dict, cfg: dict) -> list[str]:
    problems = [] if task["data"].get(cfg["var"]) else [f"no data.{cfg['var']}"]
    for p in task.get("predictions", []):
        if not p.get("model_version") or not 0.0 <= float(p["score"]) <= 1.0:
            problems.append(f"prediction model_version/score {p.get('model_version')!r} {p.get('score')}")
        problems += [x for r in p["result"] for x in region_problems(r, cfg)]
    for a in task.get("annotations", []):
        problems += [x for r in a["result"] for x in region_problems(r, cfg)]
    return problems


@pytest.fixture
def exported(reviewed_ws, tmp_path):  # noqa: F811
    ws, rows = reviewed_ws
    export(ws, "label-studio", tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    return ws, rows, tasks, tmp_path / "ls"


def test_every_task_is_valid_for_the_exported_config_and_its_image_is_there(exported):
    ws, rows, tasks, folder = exported
    cfg = config_of((folder / "label_config.xml").read_text())
    assert cfg["classes"] == ws.dataset().class_names
    assert [p for t in tasks for p in task_problems(t, cfg)] == []
    for t in tasks:  # a Label Studio local-files URL relative to the export folder
        assert t["data"]["image"].startswith(LOCAL_FILES_PREFIX)
        rel = t["data"]["image"].split("?d=", 1)[1]
        assert Image.open(folder / rel).size == (16, 16)  # the source image, as imported
    assert sum("annotations" in t for t in tasks) == 3  # two accepted, one relabeled
    assert all("predictions" in t for t in tasks)


def test_a_wrong_choice_would_be_caught():
    cfg = {"control": "label", "to": "image", "classes": ["a", "b"]}
    region = {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["c"]}}
    assert region_problems(region, cfg) == ["choices ['c']"]


def test_rejected_pseudo_labels_are_marked_for_filtering(exported):
    ws, rows, tasks, _ = exported
    by_id = {t["data"]["sample_id"]: t for t in tasks}
    rejected = by_id[rows.sample_ids[2]]
    assert rejected["data"]["status"] == "reject" and "annotations" not in rejected
    assert rejected["data"]["pseudo_label"] == ws.dataset().class_names[rows.label[2]]
    assert rejected["predictions"][0]["model_version"].startswith("mpl-studio/tiny/run-")


def test_the_readme_says_how_to_make_the_images_appear(exported):
    text = (exported[3] / "README.txt").read_text()
    for needed in ("LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
                   "Local files", "/images", "Save (not Sync", "label_config.xml", "tasks.json", "status = reject"):
        assert needed in text, needed


def test_images_served_elsewhere_get_that_url_prefix(reviewed_ws, tmp_path):  # noqa: F811
    ws, _ = reviewed_ws
    export(ws, "label-studio", tmp_path / "ls", image_prefix="https://example.org/imgs/")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert all(t["data"]["image"] == "https://example.org/imgs/" + t["data"]["file"] for t in tasks)
    assert "https://example.org/imgs/" in (tmp_path / "ls" / "README.txt").read_text()
    with pytest.raises(MPLStudioError, match="must start with"):
        export(ws, "label-studio", tmp_path / "bad", image_prefix="ftp:/x")


def as_label_studio_export(tasks: list[dict]) -> list[dict]:
    """What Label Studio's Export > JSON gives for these tasks: ids, timestamps, predictions as ids."""
    out = []
    for n, task in enumerate(copy.deepcopy(tasks)):
        task["predictions"] = [n + 1] if task.get("predictions") else []
        task["annotations"] = [{"id": 1000 + n, "completed_by": 1, "was_cancelled": False, "ground_truth": True,
                                "created_at": "2026-11-27T10:00:00Z", "updated_at": "2026-11-27T10:00:00Z",
                                **a} for a in task.get("annotations", [])]
        out.append(task)
    return out


def annotate(task: dict, label: str, when: str, cancelled: bool = False) -> None:
    task["annotations"].append({"id": 5000 + len(task["annotations"]), "was_cancelled": cancelled,
                                "updated_at": when, "result": [{"from_name": "label", "to_name": "image",
                                                                "type": "choices", "value": {"choices": [label]},
                                                                "id": "x", "origin": "manual"}]})


def test_corrections_made_in_label_studio_come_back_as_one_undoable_batch(exported):
    ws, rows, tasks, _ = exported
    names = ws.dataset().class_names
    ls = {t["data"]["sample_id"]: t for t in as_label_studio_export(tasks)}
    other = {n: names[1 - names.index(n)] for n in names}
    pending, accepted, rejected = rows.sample_ids[5], rows.sample_ids[0], rows.sample_ids[2]
    annotate(ls[pending], names[rows.label[5]], "2026-11-27T11:00:00Z")  # agrees with the model: accept
    annotate(ls[accepted], other[names[rows.label[0]]], "2026-11-27T11:00:00Z")  # a colleague corrects it
    annotate(ls[rejected], other[names[rows.label[2]]], "2026-11-27T11:00:00Z")  # gives the right class
    annotate(ls[rows.sample_ids[6]], names[0], "2026-11-27T12:00:00Z", cancelled=True)  # skipped: ignored
    before = ws.store.current_decisions()

    summary = import_label_studio(ws, json.dumps(list(ls.values())), who="colleague")
    assert summary.decided == {"accept": 1, "relabel": 2, "manual": 0}
    assert summary.annotated == 5 and summary.unchanged == 2  # tasks 1 and 3 came back as exported
    dec = ws.store.current_decisions()
    now = {int(i): (a, int(lab)) for i, a, lab in zip(dec["idx"], dec["action"], dec["label"])}
    assert now[int(rows.idx[5])] == ("accept", int(rows.label[5]))
    assert now[int(rows.idx[0])] == ("relabel", 1 - int(rows.label[0]))
    assert now[int(rows.idx[2])] == ("relabel", 1 - int(rows.label[2]))
    assert int(rows.idx[6]) not in now
    # an annotation that agrees may be one the export wrote for a bulk accept: not counted as a person's
    assert not dict(zip(dec["idx"].tolist(), dec["seen"].tolist()))[int(rows.idx[5])]

    assert ws.store.undo_last() == 3  # one batch
    after = ws.store.current_decisions()
    assert {k: v.tolist() for k, v in after.items()} == {k: v.tolist() for k, v in before.items()}


def test_a_dry_run_counts_and_records_nothing(exported):
    ws, rows, tasks, _ = exported
    ls = as_label_studio_export(tasks)
    annotate(ls[5], ws.dataset().class_names[0], "2026-11-27T11:00:00Z")
    version = ws.store.decisions_version()
    summary = import_label_studio(ws, json.dumps(ls), who="x", dry_run=True)
    assert sum(summary.decided.values()) == 1 and ws.store.decisions_version() == version


@pytest.mark.parametrize("change, message", [
    (lambda t: t["data"].update(sample_id="unlabeled/nope.png"), "is not in this workspace's unlabeled pool"),
    (lambda t: t["data"].update(pool_index=99999), "has pool index 99999"),
    (lambda t: t["data"].pop("sample_id"), "no sample_id"),
    (lambda t: annotate(t, "giraffe", "2026-11-28T00:00:00Z"), "class 'giraffe' is not one of"),
    (lambda t: t.update(annotations=5), "not in Label Studio's JSON format"),
    (lambda t: t["annotations"][-1]["result"][0].update(value="x"), "not in Label Studio's JSON format"),
    (lambda t: t["annotations"][-1]["result"][0]["value"].update(choices={"a": 1}), "not in Label Studio's JSON"),
    (lambda t: t["data"].update(sample_id=["x"]), "not in Label Studio's JSON format"),
])
def test_unknown_samples_or_classes_import_nothing(exported, change, message):
    ws, rows, tasks, _ = exported
    ls = as_label_studio_export(tasks)
    annotate(ls[7], ws.dataset().class_names[0], "2026-11-27T11:00:00Z")  # a good correction beside the bad one
    change(ls[7])
    version = ws.store.decisions_version()
    with pytest.raises(MPLStudioError, match=message) as err:
        import_label_studio(ws, json.dumps(ls), who="x")
    assert str(err.value).startswith("nothing imported") and ws.store.decisions_version() == version


@pytest.mark.parametrize("data, message", [
    (b"\x89PNG not json", "not a Label Studio JSON export"),
    (b'{"tasks": 3}', "expected a list of tasks"),
    (b'[{"image": "x.png", "label": "a"}]', "JSON-MIN"),
])
def test_files_that_are_not_a_label_studio_export_are_refused(reviewed_ws, data, message):  # noqa: F811
    with pytest.raises(MPLStudioError, match=message):
        import_label_studio(reviewed_ws[0], data, who="x")


def test_the_imagefolder_export_maps_folders_back_to_class_names(reviewed_ws, tmp_path):  # noqa: F811
    ws, _ = reviewed_ws
    export(ws, "imagefolder", tmp_path / "if")
    mapping = json.loads((tmp_path / "if" / "classes.json").read_text())
    assert mapping["folder_to_class"] == {"horizontal": "horizontal", "vertical": "vertical"}
    assert mapping["classes"] == ws.dataset().class_names
