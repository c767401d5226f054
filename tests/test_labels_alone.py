"""A semi-supervised run is never silently worse than its labels: it can be preceded by a supervised run
on the same labels, and says where it ended below it on validation."""
import torch

from conftest import swap_step, tiny_run_config
from mpl_core.service.work import start_training


def test_a_run_with_the_labels_alone_trains_them_first_in_a_run_of_its_own(tiny_workspace):
    ws = tiny_workspace
    assert start_training(ws, tiny_run_config("mpl"), labels_alone=True).join(120).state == "done"
    alone, mpl = ws.store.runs()
    assert alone["config"]["algorithm"]["name"] == "supervised" and mpl["config"]["algorithm"]["name"] == "mpl"
    t = mpl["config"]["train"]
    assert alone["config"]["train"]["steps"] == t["steps"] + t["finetune_steps"]
    assert mpl["metrics"]["labels_alone_run"] == alone["id"]
    assert mpl["metrics"]["labels_alone_val_acc"] == alone["metrics"]["val_acc"]
    behind = mpl["metrics"]["val_acc" if mpl["metrics"]["hands_back"] == "student" else "teacher_val_acc"] < \
        alone["metrics"]["val_acc"]
    assert ("ended below the labels alone" in mpl["message"]) == behind


def test_a_run_below_the_labels_alone_says_so_and_names_the_better_run(tiny_workspace, monkeypatch):
    def idle(teacher, student, batch, cfg, step, feedback, mean):  # MPL that learns nothing
        return {"t_loss": torch.zeros(())}
    swap_step(monkeypatch, "mpl", idle)
    ws = tiny_workspace
    assert start_training(ws, tiny_run_config("mpl", steps=30), labels_alone=True).join(120).state == "done"
    alone, mpl = ws.store.runs()
    assert alone["metrics"]["val_acc"] > 0.9  # the stripes are easy from their labels alone
    assert "ended below the labels alone on validation" in mpl["message"]
    assert f"run {alone['id']}, supervised on the same labels, is the better model" in mpl["message"]


def test_supervised_or_fine_tuning_runs_need_no_comparison(tiny_workspace):
    ws = tiny_workspace
    assert start_training(ws, tiny_run_config("supervised"), labels_alone=True).join(60).state == "done"
    assert [r["config"]["algorithm"]["name"] for r in ws.store.runs()] == ["supervised"]
