import json
import subprocess
import sys
from pathlib import Path

from mpl_core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_then_evaluate_a_few_steps(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", str(image_folder), "--algorithm", "mpl", "--preset", "smoke",
                 "--steps", "4", "--finetune-steps", "2", "--out", str(out), "--quiet", "--batch-size", "4", "--model", "cnn"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test_acc:" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["algorithm"]["name"] == "mpl" and "test_acc" in result["metrics"]
    assert main(["evaluate", str(out), "--dataset", str(image_folder)]) == 0
    assert "student test_acc" in capsys.readouterr().out


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
    assert proc.stderr.strip().splitlines()[-1].startswith("error: not usable:")


def test_bad_values_are_one_line_errors(capsys):
    assert main(["train", "--threshold", "1.5", "--quiet"]) == 2
    assert "threshold must be between 0 and 1" in capsys.readouterr().err
    assert main(["inspect", "/nonexistent/folder"]) == 1
