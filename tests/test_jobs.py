import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import ROOT, swap_step, tiny_run_config
from mpl_core.engine.algorithms import get_algorithm
from mpl_core.engine.checkpoint import latest_checkpoint, list_checkpoints
from mpl_core.engine.state import load_model
from mpl_core.service.job import BACKGROUND_NICE, TrainingJob
from mpl_core.service.lock import JobBusy, JobLock
from mpl_core.service.work import recover, start_pseudo_labeling, start_training
from mpl_core.workspace.workspace import open_workspace


def wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_start_pause_resume_stop_and_resume_the_run(tiny_workspace):
    ws = tiny_workspace
    job = start_training(ws, tiny_run_config("mpl", steps=100000, eval_every=50))
    wait_for(lambda: job.status().step >= 20)
    st = job.status()
    assert st.state == "running" and st.total == 100000 and st.device.startswith("cpu") and "t_loss" in st.metrics
    job.pause()
    time.sleep(0.3)
    paused_at = job.status().step
    time.sleep(0.5)
    assert job.status().state == "paused" and job.status().step == paused_at
    assert ws.store.run(st.run_id)["status"] == "paused"
    job.resume()
    wait_for(lambda: job.status().step > paused_at)
    job.stop()
    final = job.join(60)
    assert final.state == "stopped" and not final.active
    assert ws.store.run(st.run_id)["status"] == "stopped"
    assert ws.store.metric_rows(st.run_id)[0]["step"] == 10  # metrics reached the store
    # stopping saved a checkpoint at the step it reached; resuming continues from there
    assert latest_checkpoint(ws.run_dir(st.run_id)).name == f"ckpt-{final.step:07d}.safetensors"
    steps = []
    job2 = start_training(ws, run_id=st.run_id, on_progress=lambda p: (steps.append(p.step), job2_stop()))
    def job2_stop():
        if len(steps) >= 2:
            job2.stop()
    job2.join(60)
    assert steps[0] == (final.step // 10 + 1) * 10  # the first log after the saved step


def test_worker_exception_fails_the_job_and_frees_the_workspace(tiny_workspace):
    def broken(job):
        raise ZeroDivisionError("boom")

    job = TrainingJob(tiny_workspace, "train", broken).start()
    st = job.join(10)
    assert st.state == "failed" and "ZeroDivisionError: boom" in st.error
    assert "jobs.log" in os.listdir(tiny_workspace.root / "logs")
    assert start_training(tiny_workspace, tiny_run_config("supervised")).join(60).state == "done"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are Linux's")
def test_an_app_job_runs_below_the_pages_priority_and_its_cpu_threads_inherit_it(tiny_workspace):
    def work(job):
        torch.set_num_threads(2)
        torch.nn.functional.conv2d(torch.randn(8, 8, 32, 32), torch.randn(8, 8, 3, 3))  # starts its thread team
        return {"nice": {int(t): _nice(t) for t in os.listdir("/proc/self/task")}, "me": threading.get_native_id()}

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    before = {int(t) for t in os.listdir("/proc/self/task")}
    seen = TrainingJob(tiny_workspace, "train", work, nice=BACKGROUND_NICE).start().join(30).result
    assert seen["nice"][seen["me"]] == min(19, mine + BACKGROUND_NICE)
    new = [t for t in seen["nice"] if t not in before]  # the job's thread and the threads it started
    assert len(new) >= 2 and all(seen["nice"][t] == seen["nice"][seen["me"]] for t in new)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's is its own
    plain = TrainingJob(tiny_workspace, "train", work).start().join(30).result  # the CLI's: as its caller
    assert plain["nice"][plain["me"]] == mine


def _nice(tid) -> int:
    return int(open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny_workspace, monkeypatch):
    honest = get_algorithm("supervised").step

    def diverging(learner, batch, cfg, step):
        metrics = honest(learner, batch, cfg, step)
        if step >= 24:
            metrics["loss"] = torch.tensor(float("nan"))
        return metrics

    swap_step(monkeypatch, "supervised", diverging)
    job = start_training(tiny_workspace, tiny_run_config("supervised", steps=100, checkpoint_every=10))
    st = job.join(60)
    assert st.state == "failed" and "loss became nan" in st.error and "last good checkpoint" in st.error
    run = tiny_workspace.store.run(st.run_id)
    assert run["status"] == "failed" and "nan" in run["message"]
    path = latest_checkpoint(tiny_workspace.run_dir(st.run_id))
    assert path.name == "ckpt-0000020.safetensors"
    model, info = load_model(path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_one_job_at_a_time_in_threads_and_processes(tiny_workspace):
    ws = tiny_workspace
    job = start_training(ws, tiny_run_config("mpl", steps=100000))
    with pytest.raises(JobBusy, match="another job is running in this workspace .train run 1"):
        start_training(ws, tiny_run_config("mpl"))
    with pytest.raises(JobBusy):
        start_pseudo_labeling(ws)
    job.stop()
    job.join(60)
    assert len(ws.store.runs()) == 1  # the refused job left no run behind
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from mpl_core.service.lock import JobLock; "
        "JobLock(sys.argv[2]).acquire({'kind': 'train'}); print('held', flush=True); time.sleep(60)"),
        str(ROOT), str(ws.lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JobBusy):
            start_training(ws, tiny_run_config("supervised"))
    finally:
        holder.kill()
        holder.wait()
    JobLock(ws.lock_path).acquire({})  # released by the kernel when the holder died


def test_training_process_killed_mid_run_resumes_from_its_checkpoint(tiny_workspace, tmp_path):
    cmd = [sys.executable, "-m", "mpl_core", "train", "--workspace", "tiny", "--data-root", str(tmp_path),
           "--algorithm", "mpl", "--steps", "100000", "--checkpoint-every", "20", "--eval-every", "0",
           "--width", "4", "--batch-size", "4", "--mu", "2", "--device", "cpu", "--quiet"]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = tiny_workspace.run_dir(1)
    try:
        wait_for(lambda: len(list_checkpoints(run_dir)) >= 2, timeout=120)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # a fresh process's view: the run is marked interrupted and resumes from the newest checkpoint
    ws = open_workspace("tiny", tmp_path)
    assert ws.store.run(1)["status"] == "running"
    assert recover(ws) == 1 and ws.store.run(1)["status"] == "interrupted"
    saved_step = int(latest_checkpoint(run_dir).stem.split("-")[1])
    steps = []

    def hook(p):
        steps.append(p.step)
        job.stop()

    job = start_training(ws, run_id=1, on_progress=hook)
    assert job.join(60).state == "stopped"
    assert steps[0] == saved_step + 10


def test_demo_job_trains_pseudo_labels_accepts_and_retrains(tiny_workspace):
    from mpl_core.service.demo import start_demo
    job = start_demo(tiny_workspace, tiny_run_config("mpl"), tiny_run_config("supervised"), target_precision=0.5)
    st = job.join(120)
    assert st.state == "done", st.error
    r = st.result
    runs = tiny_workspace.store.runs()
    assert [x["kind"] for x in runs] == ["train", "retrain"] and all(x["status"] == "done" for x in runs)
    assert r["pseudo_labels"] == 40 and r["accepted"] == tiny_workspace.store.decision_counts()["accept"]
    assert r["labels_used"] == r["labels_given"] + r["accepted"]
    assert 0.0 <= r["before_test_acc"] <= 1.0 and 0.0 <= r["after_test_acc"] <= 1.0
    # the story's precision is the index's at the chosen threshold (own images: no true precision)
    from mpl_core.workspace.review import threshold_index
    stats = threshold_index(tiny_workspace).stats(r["threshold"])
    assert [r["est_precision"], r["est_low"], r["est_high"]] == pytest.approx(
        [stats.est_precision, stats.est_low, stats.est_high], nan_ok=True)
    assert r["val_support"] == stats.val_support and r["true_precision"] is None


def test_out_of_gpu_memory_retries_with_a_smaller_batch_and_says_so(tiny_workspace, monkeypatch):
    """CUDA OOM, simulated on the CPU: any step with more than 8 labeled images runs out of memory."""
    honest = get_algorithm("supervised").step
    seen = []

    def hungry(learner, batch, cfg, step):
        seen.append(len(batch.y_l))
        if len(batch.y_l) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return honest(learner, batch, cfg, step)

    swap_step(monkeypatch, "supervised", hungry)
    job = start_training(tiny_workspace, tiny_run_config("supervised", steps=30, batch_size=32, checkpoint_every=10))
    st = job.join(120)
    assert st.state == "done", st.error
    assert st.notes == ["out of GPU memory at batch size 32; retrying with batch size 16 from the last checkpoint",
                        "out of GPU memory at batch size 16; retrying with batch size 8 from the last checkpoint"]
    assert seen[:3] == [32, 16, 8] and set(seen[3:]) == {8}
    run = tiny_workspace.store.run(st.run_id)
    assert run["status"] == "done" and run["config"]["train"]["batch_size"] == 8  # a resume keeps it


def test_out_of_memory_at_the_smallest_batch_is_a_clear_failure(tiny_workspace, monkeypatch):
    def always(learner, batch, cfg, step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    swap_step(monkeypatch, "supervised", always)
    st = start_training(tiny_workspace, tiny_run_config("supervised", steps=30, batch_size=4)).join(60)
    assert st.state == "failed" and "out of GPU memory even with batch size 2" in st.error


def test_full_disk_while_checkpointing_fails_clearly_and_keeps_the_last_checkpoint(tiny_workspace, monkeypatch):
    import errno

    from mpl_core.engine import checkpoint
    honest = checkpoint.save_file
    calls = []

    def filling(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 1:  # the disk fills after the first checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return honest(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", filling)
    ws = tiny_workspace
    st = start_training(ws, tiny_run_config("supervised", steps=100, checkpoint_every=10)).join(60)
    assert st.state == "failed" and "No space left on device" in st.error and "free some disk space" in st.error
    assert ws.store.run(st.run_id)["status"] == "failed"
    assert [p.name for p in list_checkpoints(ws.run_dir(st.run_id))] == ["ckpt-0000010.safetensors"]
    assert not list(ws.run_dir(st.run_id).glob("*.tmp"))  # no half-written file left
    monkeypatch.setattr(checkpoint, "save_file", honest)  # space freed: the run resumes and finishes
    assert start_training(ws, run_id=st.run_id).join(60).state == "done"


def test_full_disk_in_the_store_loses_nothing_already_saved(tiny_workspace, full_disk):
    from mpl_core.errors import MPLStudioError
    store = tiny_workspace.store
    run = store.create_run("train", {})
    store.update_run(run, status="done")
    full_disk(True)
    with pytest.raises(MPLStudioError, match="disk is full.*nothing of this change was saved"):
        store.update_run(run, status="failed")
    full_disk(False)
    assert store.run(run)["status"] == "done" and store.integrity_check() == "ok"


def test_a_job_from_the_app_takes_every_core_only_while_no_one_uses_the_app(tiny_workspace, monkeypatch):
    from mpl_core.service import studio as studio_mod
    monkeypatch.setattr(studio_mod, "usable_cores", lambda: 3)
    studio, mine = studio_mod.Studio(tiny_workspace.data_root), torch.get_num_threads()
    studio.touch()
    assert studio.job_threads() == 2  # someone is using the pages: one core stays theirs
    studio.idle_after_s = 0.0
    assert studio.job_threads() == 3  # no one: every core
    threads_seen, asked = [], studio.job_threads

    def recording() -> int:  # the thread count the loop set after the previous answer
        threads_seen.append(torch.get_num_threads())
        return asked()
    monkeypatch.setattr(studio, "job_threads", recording)
    job = studio.start("tiny", "train", cfg=tiny_run_config("supervised", steps=40, eval_every=0))
    assert job.control.threads == recording
    assert job.join(120).state == "done"
    try:
        assert threads_seen[-1] == 3  # asked between steps, and applied in the training thread
        assert torch.get_num_threads() == mine  # ... and only there
    finally:
        torch.set_num_threads(mine)  # torch keeps the last count as the default of new threads
    threads_seen.clear()
    assert studio.start("tiny", "pseudo_label").join(120).state == "done"
    try:
        assert threads_seen  # pseudo-labeling asks too, between batches
    finally:
        torch.set_num_threads(mine)
    chosen = tiny_run_config("supervised", steps=4, eval_every=0)
    chosen.train.threads = 1
    job = studio.start("tiny", "train", cfg=chosen)
    assert job.control.threads is None  # threads a person set are left alone
    assert job.join(120).state == "done"
    torch.set_num_threads(mine)


def test_the_app_gives_its_threads_one_openmp_thread_unless_a_job_sets_more():
    """app.py calls it before torch loads: the pages' threads then start no OpenMP teams of their own
    (see mpl_core/service/threads.py); once torch is loaded it is too late and says so."""
    code = ("import os; from mpl_core import one_thread_outside_jobs as f; first = f(); "
            "import torch; print(first, os.environ['OMP_NUM_THREADS'], torch.get_num_threads(), f())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "1", "1", "False"]
    assert "one_thread_outside_jobs()" in (ROOT / "app.py").read_text().split("import streamlit")[0]
