import json
import subprocess
import sys
from pathlib import Path

from mpl_core.service.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_then_evaluate_a_few_steps(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", str(image_folder), "--algorithm", "mpl", "--preset", "smoke",
                 "--steps", "4", "--finetune-steps", "2", "--out", str(out), "--quiet",
                 "--batch-size", "4", "--model", "cnn"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test_acc:" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["algorithm"]["name"] == "mpl" and "test_acc" in result["metrics"]
    assert main(["evaluate", str(out), "--dataset", str(image_folder)]) == 0
    out = capsys.readouterr().out
    assert "student test_acc" in out or "teacher test_acc" in out  # auto: the model the run hands back


def test_inspect_good_folder_exits_zero(image_folder, capsys):
    assert main(["inspect", str(image_folder)]) == 0
    out = capsys.readouterr().out
    assert "classes (3)" in out and "usable: yes" in out


def test_inspect_broken_folder_says_why_without_traceback(tmp_path):
    (tmp_path / "labeled").mkdir()
    (tmp_path / "labeled" / "x.png").write_text("not an image")
    proc = subprocess.run([sys.executable, "-m", "mpl_core", "inspect", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}: not usable:")


def test_bad_values_are_one_line_errors(capsys):
    assert main(["train", "--threshold", "1.5", "--quiet"]) == 2
    assert "threshold must be between 0 and 1" in capsys.readouterr().err
    assert main(["inspect", "/nonexistent/folder"]) == 1


def test_workspace_loop_train_pseudo_label_review_retrain_export(tmp_path, capsys):
    from conftest import write_stripes_folder
    write_stripes_folder(tmp_path / "stripes", labeled=12)  # 10 a class to train on, 2 held out for validation
    ws = ["--workspace", "w", "--data-root", str(tmp_path), "--quiet"]
    small = ["--steps", "6", "--finetune-steps", "2", "--batch-size", "4", "--mu", "2", "--width", "4",
             "--device", "cpu"]
    assert main(["train", "--dataset", "stripes", "--val-per-class", "2", *ws, *small]) == 0
    assert "run 1: done" in capsys.readouterr().out
    assert main(["pseudo-label", *ws]) == 0
    out = capsys.readouterr().out
    assert "round 1: 40 pseudo-labels from the teacher of run 1" in out and "| 0.90 |" in out
    assert main(["review", *ws, "--accept-above", "0.0", "--class", "vertical", "--dry-run"]) == 0
    assert "would accept" in capsys.readouterr().out
    assert main(["review", *ws, "--accept-above", "0.0", "--who", "ana"]) == 0
    assert "accepted 40 pseudo-label(s)" in capsys.readouterr().out
    assert main(["review", *ws, "--undo", "--who", "ana"]) == 0 and "undid 40" in capsys.readouterr().out
    assert main(["review", *ws, "--accept-at-precision", "0.3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "thresholds for an estimated 30.0%: " in out and "validation image(s)" in out
    found = out.split("thresholds for an estimated 30.0%: ")[1].split()[0]
    would = out.split("would accept ")[1].split()[0]
    assert main(["review", *ws, "--accept-above", found, "--dry-run"]) == 0  # the same rows as that threshold
    assert f"would accept {would} " in capsys.readouterr().out
    assert main(["review", *ws, "--accept-at-precision", "0.95", "--per-class", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "horizontal 0.990, vertical 0.990" in out  # 2 validation images a class: the strict fallback
    assert "no threshold reaches it for " in out
    assert "caution: few validation images are predicted as some classes" in out  # 2 validation images a class
    assert main(["review", *ws, "--per-class", "--accept-above", "0.5"]) == 2
    assert "--per-class goes with --accept-at-precision" in capsys.readouterr().err
    assert main(["review", *ws, "--accept-at-precision", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["review", *ws, "--reject-below", "1.0"]) == 0
    assert main(["retrain", *ws, *small]) == 0
    summary = "labels used 20 (given 20, accepted 0, of them one by one 0, human 0, rejected and left out 40)"
    assert summary in capsys.readouterr().out
    mpl_run = tmp_path / "workspaces" / "w" / "runs" / "0001"
    assert main(["retrain", *ws, *small, "--init-from", str(mpl_run)]) == 0  # fine-tunes run 1's student
    assert "run 3: done" in capsys.readouterr().out
    assert main(["retrain", *ws, *small, "--init-from", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["export", *ws, "--format", "csv", "--out", str(tmp_path / "l.csv")]) == 0
    assert (tmp_path / "l.csv").read_text().count("reject") == 40
    assert main(["status", *ws]) == 0
    out = capsys.readouterr().out
    assert "run 2 retrain" in out and "reject 40" in out and "run 3 retrain" in out
    # each run names the model it hands back; a later run its gain over the best earlier one on validation
    from mpl_core.workspace.results import run_gains
    from mpl_core.workspace.workspace import open_workspace
    runs = open_workspace("w", tmp_path).store.runs()
    line = next(x for x in out.splitlines() if x.startswith("run 3 retrain"))
    stage = run_gains(runs)[3]
    assert "student test_acc" in line and f"{stage.gain * 100:+.2f} points over {stage.best_before}" in line
    assert main(["evaluate", str(mpl_run), "--dataset", str(tmp_path / "stripes")]) == 0  # auto: what run 1 hands back
    assert capsys.readouterr().out.startswith(f"{runs[0]['metrics']['hands_back']} test_acc")


def test_workspace_errors_are_one_line(tmp_path, capsys):
    assert main(["pseudo-label", "--workspace", "nope", "--data-root", str(tmp_path)]) == 2
    assert "no workspace" in capsys.readouterr().err
    assert main(["train", "--workspace", "../../etc", "--data-root", str(tmp_path), "--quiet"]) == 2
    assert "workspace name" in capsys.readouterr().err
    assert main(["train", "--workspace", "x", "--dataset", "/etc", "--data-root", str(tmp_path), "--quiet"]) == 2
    assert "outside the data folder" in capsys.readouterr().err
