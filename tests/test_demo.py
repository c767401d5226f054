"""The demo's story: labels alone first, and every gain measured from the best model before its step."""
import pytest

from mpl_core.config import DataConfig
from mpl_core.presets import demo_plan, labels_alone_config
from mpl_core.service.demo import start_demo
from mpl_core.workspace.results import handed_back
from mpl_core.workspace.workspace import create_workspace
from tests.test_pseudo_labels import tiny_demo


def test_the_labels_alone_run_is_supervised_on_the_same_labels_and_updates():
    plan = demo_plan(seed=3)
    base, mpl = plan.baseline, plan.train
    assert base.algorithm.name == "supervised" and base.data == mpl.data and base.model == mpl.model
    assert base.train.steps == mpl.train.steps + mpl.train.finetune_steps and base.train.seed == mpl.train.seed == 3
    assert base.train.batch_size == mpl.train.batch_size and not base.model.init_from
    assert labels_alone_config(mpl) == base


def test_the_demo_names_the_best_model_before_each_step_and_measures_gains_from_it(fmnist, tmp_path):
    ws = create_workspace("demo", DataConfig(max_unlabeled=300), tmp_path)
    cfg, retrain, full = tiny_demo(steps=20, finetune_steps=5, full_steps=40)
    status = start_demo(ws, cfg, retrain, full_retrain_cfg=full, baseline_cfg=labels_alone_config(cfg),
                        budget_s=3600.0, target_precision=0.5, fine_tune=True).join(300)
    assert status.state == "done", status.error
    r, runs = status.result, ws.store.runs()
    assert [(x["kind"], x["config"]["algorithm"]["name"]) for x in runs] == [
        ("train", "supervised"), ("train", "mpl"), ("retrain", "supervised"), ("retrain", "supervised")]
    assert r["supervised_run"] == runs[0]["id"] and r["supervised_test_acc"] == runs[0]["metrics"]["test_acc"]
    names = [s["name"] for s in r["stages"]]
    assert names[:3] == ["labels alone (supervised)", "MPL student", "MPL teacher"] and len(names) == 5
    # the stages' accuracies are the runs' own, each step's best-before the highest on validation before it
    m = [x["metrics"] for x in runs]
    expected = [(0, m[0]["val_acc"], m[0]["test_acc"]), (1, m[1]["val_acc"], m[1]["test_acc"]),
                (1, m[1]["teacher_val_acc"], m[1]["teacher_test_acc"]),
                (2, *handed_back(m[2])[1:]), (3, *handed_back(m[3])[1:])]
    stages = r["stages"]
    assert [(s["step"], s["val_acc"], s["test_acc"]) for s in stages] == expected
    for s in stages[1:]:
        earlier = [t for t in stages if t["step"] < s["step"]]
        best = max(earlier, key=lambda t: t["val_acc"])  # the first on a tie, as max keeps it
        assert s["best_before"] == best["name"]
        assert s["gain"] == pytest.approx(s["test_acc"] - best["test_acc"])
    retrained = next(s for s in stages if s["run"] == r["retrain_run"])
    assert r["retrain_gain"] == retrained["gain"] and r["retrain_gain_over"] == retrained["best_before"]
    # each stage's accuracy is the one its run hands back
    _, val, test = handed_back(runs[2]["metrics"])
    assert (retrained["val_acc"], retrained["test_acc"]) == (val, test)
    mpl = runs[1]["metrics"]
    assert mpl["hands_back"] == ("teacher" if mpl["teacher_val_acc"] > mpl["val_acc"] else "student")
    assert r["hands_back"] == mpl["hands_back"]


def test_the_labels_alone_run_must_be_supervised_from_scratch(tiny_workspace):
    from mpl_core.errors import MPLStudioError
    cfg, retrain, _ = tiny_demo(steps=5, finetune_steps=1, full_steps=5)
    with pytest.raises(MPLStudioError, match="labels-alone run must be supervised"):
        start_demo(tiny_workspace, cfg, retrain, baseline_cfg=cfg)
