"""Training with several processes (torchrun, gloo on the CPU): ranks in sync, rank 0 writes,
exact resume, and the workspace CLI with sharded pseudo-labeling."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, write_stripes_folder
from mpl_core.engine import distributed
from mpl_core.engine.checkpoint import latest_checkpoint, load_checkpoint


def torchrun(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_stay_in_sync_rank_0_writes_and_resume_is_exact(tmp_path):
    torchrun(str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), cwd=tmp_path)
    rank0 = load_file(tmp_path / "straight.rank0.safetensors")
    rank1 = load_file(tmp_path / "straight.rank1.safetensors")
    assert {k.split(".")[0] for k in rank0} == {"student", "teacher"}  # fine-tuned: the EMA was folded in
    # Each rank drew other images (sharded), so only DDP's gradient averaging and the buffer sync
    # keep them equal: weights, BatchNorm statistics, everything.
    assert _max_diff(rank0, rank1) == 0.0
    tensors, info = load_checkpoint(latest_checkpoint(tmp_path / "straight"))
    assert info["world_size"] == 2 and "rng.rank1.index" in tensors
    saved = {k.replace(".model.", ".", 1): v for k, v in tensors.items()
             if k.startswith(("student.model.", "teacher.model."))}
    assert _max_diff(saved, rank0) == 0.0  # the checkpoint holds what the ranks hold
    # Stopped at step 10 (asked by rank 1 alone), then resumed from rank 0's checkpoint: the same
    # final weights as the uninterrupted run, on both ranks.
    assert _max_diff(load_file(tmp_path / "resumed.rank0.safetensors"), rank0) == 0.0
    assert _max_diff(load_file(tmp_path / "resumed.rank1.safetensors"), rank1) == 0.0
    # Separate view batches (gradients averaged by hand, not by DDP): the ranks stay equal too,
    # and they trained a different model from the joint batches.
    sep0 = load_file(tmp_path / "separate.rank0.safetensors")
    assert _max_diff(sep0, load_file(tmp_path / "separate.rank1.safetensors")) == 0.0
    assert _max_diff(sep0, rank0) > 0
    # Only rank 0 was given folders, and nothing else was written beside them.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["resumed", "separate", "straight"]


def test_torchrun_workspace_training_and_sharded_pseudo_labels_match_one_process(tmp_path):
    # odd: the ranks' shards differ in size; 12 labels a class: 10 to train on, 2 for validation (which
    # end_finetune's decision, made by rank 0 for both, needs)
    write_stripes_folder(tmp_path / "stripes", labeled=12, unlabeled=41)
    ws = ["--workspace", "w", "--data-root", str(tmp_path), "--quiet"]
    small = ["--steps", "10", "--finetune-steps", "2", "--batch-size", "4", "--mu", "2", "--width", "4",
             "--device", "cpu", "--checkpoint-every", "5"]
    done = torchrun("-m", "mpl_core", "train", "--dataset", "stripes", "--val-per-class", "2", *ws, *small,
                    cwd=tmp_path)
    assert "run 1: done" in done.stdout
    assert done.stdout.count("run 1: done") == 1  # the other rank prints nothing
    torchrun("-m", "mpl_core", "pseudo-label", *ws, cwd=tmp_path)
    # The same model pseudo-labels the pool again in one process: the merged shards must agree.
    one = subprocess.run([sys.executable, "-m", "mpl_core", "pseudo-label", *ws], cwd=tmp_path, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert one.returncode == 0, one.stderr
    from mpl_core.workspace.workspace import open_workspace
    store = open_workspace("w", tmp_path).store
    run = store.runs()[0]
    assert run["status"] == "done" and run["checkpoint"] and run["config"]["train"]["batch_size"] == 4
    assert run["metrics"]["processes"] == 2
    assert [r["count"] for r in store.rounds()] == [41, 41]
    sharded, single = store.pseudo_labels(1), store.pseudo_labels(2)
    assert sharded.sample_ids == single.sample_ids
    assert np.array_equal(sharded.label, single.label)
    np.testing.assert_allclose(sharded.confidence, single.confidence, atol=1e-5)
    rows = store.metric_rows(1)  # written once, by rank 0, averaged over the ranks
    assert [r["step"] for r in rows if r["phase"] == "train"] == [10]
    # A retrain round: rank 0 reads the decisions and sends the reviewed labels to the other rank.
    from mpl_core.service.cli import main
    assert main(["review", *ws, "--accept-above", "0.0", "--class", "vertical"]) == 0
    accepted = int((single.label == 1).sum())
    done = torchrun("-m", "mpl_core", "retrain", *ws, *small, cwd=tmp_path)
    assert f"labels used {20 + accepted} (given 20, accepted {accepted}," in done.stdout
    assert store.runs()[-1]["status"] == "done" and store.runs()[-1]["kind"] == "retrain"


def test_shards_cover_the_data_once_and_labeled_shards_hold_every_class():
    ctxs = [distributed.DistContext(r, 3, r, "gloo") for r in range(3)]
    labeled = torch.arange(100, 130)
    labels = torch.arange(30) % 5  # 6 per class
    shards = [distributed.shard(labeled, c, keys=labels) for c in ctxs]
    assert sorted(torch.cat(shards).tolist()) == labeled.tolist()
    for s in shards:
        assert set((s - 100).remainder(5).tolist()) == set(range(5))
    slices = [distributed.contiguous_shard(41, c) for c in ctxs]
    assert [i for s in slices for i in range(41)[s]] == list(range(41))
    with pytest.raises(Exception, match="cannot be shared among 3 processes"):
        distributed.shard(torch.arange(2), ctxs[2])


def test_every_process_draws_from_all_the_trusted_labels():
    from mpl_core.data.splits import Split
    from mpl_core.engine.parallel import shard_split
    labels = torch.arange(40) % 4
    split = Split(torch.arange(40), torch.arange(40, 44), torch.arange(44, 60), trusted=torch.tensor([0, 1, 2, 3]))
    for rank in range(2):
        mine = shard_split(split, torch.cat([labels, torch.zeros(20, dtype=torch.int64)]),
                           distributed.DistContext(rank, 2, rank, "gloo"))
        assert len(mine.labeled) == 20  # the labeled images are dealt out ...
        assert mine.trusted.tolist() == [0, 1, 2, 3]  # ... the four trusted ones (a class each) are not


def test_processes_that_see_different_data_or_lack_gpus_get_a_clear_error(monkeypatch):
    from mpl_core.data.splits import Split
    from mpl_core.errors import MPLStudioError
    from mpl_core.service import cli
    ctx = distributed.DistContext(0, 2, 0, "gloo")
    split = Split(torch.arange(4), torch.arange(2), torch.arange(10))
    monkeypatch.setattr(distributed, "all_gather_objects", lambda obj, c: [obj, {**obj, "unlabeled": 9}])
    with pytest.raises(MPLStudioError, match="the processes see different data"):
        cli._check_same_data(split, ctx)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(MPLStudioError, match="2 processes on this machine need 2 GPUs, and it has 1"):
        distributed.init("cuda")


def test_one_process_commands_run_once_under_torchrun(tmp_path, monkeypatch, capsys):
    from mpl_core.service.cli import main
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["status", "--workspace", "nope", "--data-root", str(tmp_path)]) == 0  # rank 1: does nothing
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["status", "--workspace", "nope", "--data-root", str(tmp_path)]) == 2
    assert "rank 0: " in capsys.readouterr().err
