"""service/run_time.py: the run time said before Start: a background probe, kept; a run's measured rate;
none while a job runs."""
import time

import pytest

from conftest import tiny_run_config
from mpl_core.service.run_time import RunTimes, duration
from mpl_core.service.work import start_training


@pytest.fixture
def quick_probes(monkeypatch):
    monkeypatch.setattr("mpl_core.engine.timing.PROBE_S", 0.2)
    monkeypatch.setattr("mpl_core.engine.timing.FINETUNE_PROBE_S", 0.1)


def test_a_probe_runs_in_the_background_and_its_timing_serves_every_step_count(tiny_workspace, quick_probes):
    times = RunTimes()
    cfg = tiny_run_config("mpl")
    assert times.get(tiny_workspace, cfg, busy=False, threads=1).state == "timing"
    times.wait(60)
    timed = times.get(tiny_workspace, cfg, busy=False, threads=1)
    assert timed.state == "timed" and timed.estimate.total_s > 0, timed
    assert timed.line().startswith("About ") and "timed: " in timed.line() and "s a step over" in timed.line()
    longer = times.get(tiny_workspace, tiny_run_config("mpl", steps=600), busy=False, threads=1)
    assert longer.state == "timed" and longer.timing == timed.timing  # the same probe: the steps set no key
    assert longer.estimate.steps_s == pytest.approx(100 * timed.estimate.steps_s)


def test_a_probe_stops_when_a_job_starts_and_keeps_nothing(tiny_workspace, monkeypatch):
    monkeypatch.setattr("mpl_core.engine.timing.PROBE_S", 60.0)
    times = RunTimes()
    cfg = tiny_run_config("mpl")
    assert times.get(tiny_workspace, cfg, busy=False, threads=1).state == "timing"
    time.sleep(0.5)
    t0 = time.perf_counter()
    times.cancel()
    assert time.perf_counter() - t0 < 20
    assert times.get(tiny_workspace, cfg, busy=True, threads=1).state == "waiting"  # nothing kept; a job runs


def test_while_a_job_runs_no_probe_and_after_a_run_its_measured_rate(tiny_workspace):
    times = RunTimes()
    cfg = tiny_run_config("mpl")
    waiting = times.get(tiny_workspace, cfg, busy=True, threads=1)
    assert waiting.state == "waiting" and "when the running job ends" in waiting.line()
    assert start_training(tiny_workspace, tiny_run_config("mpl", steps=30, eval_every=10)).join(60).state == "done"
    measured = times.get(tiny_workspace, cfg, busy=False, threads=1)
    run = tiny_workspace.store.runs()[-1]
    assert measured.state == "measured" and measured.run_id == run["id"], measured
    assert f"at the rate run {run['id']} measured" in measured.line()
    # the run's 30 steps at that rate, and the rest of its wall time (set-up, evaluations, saves) beside them
    wall, t, e = run["updated"] - run["created"], measured.timing, measured.estimate
    assert e.set_up_s == pytest.approx(wall - 30 * t.step_s - 2 * t.finetune_step_s)
    assert e.steps_s == pytest.approx(6 * t.step_s) and e.set_up_s < e.total_s < wall  # 6 steps, not 30
    assert times.get(tiny_workspace, tiny_run_config("supervised"), busy=True, threads=1).state == "waiting"


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0.2, 40, 89, 600, 17 * 60 + 20, 5400, 9000)] == \
        ["1 s", "40 s", "89 s", "10 min", "17 min", "1.5 h", "2.5 h"]


def test_a_run_that_cannot_start_here_says_why_instead_of_a_time(tiny_workspace, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = tiny_run_config("mpl")
    cfg.train.device = "cuda"
    rt = RunTimes().get(tiny_workspace, cfg, busy=False, threads=1)
    assert rt.state == "failed" and "no" in rt.line() and "CUDA" in rt.line()
