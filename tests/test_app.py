"""Each page's logic under Streamlit's AppTest (no browser): rendering, thresholds, decisions, forms."""
import tomllib
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import tiny_run_config, write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.presets import FINETUNE_ROUND_LR, PRESETS, RETRAIN_MIXUP, RETRAIN_STEPS_FACTOR
from mpl_core.service.work import start_pseudo_labeling, start_retrain, start_training
from mpl_core.workspace.review import decide_rows
from mpl_core.workspace.workspace import create_workspace, open_workspace

ROOT = Path(__file__).resolve().parents[1]
PAGES = [f"app_pages/{p}.py" for p in ("home", "data", "train", "review", "rounds", "export")]


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    """The Train page times a run in the background (service/run_time.py): a short probe here."""
    monkeypatch.setattr("mpl_core.engine.timing.PROBE_S", 0.2)
    monkeypatch.setattr("mpl_core.engine.timing.FINETUNE_PROBE_S", 0.1)


def app(page: str, data_root: Path, workspace: str | None = "tiny") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if workspace:
        at.session_state["workspace"] = workspace
    return at.switch_page(page)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def counts(data_root: Path) -> dict[str, int]:
    """Decisions by status in the store (the review grid draws these counts itself, in the browser)."""
    from mpl_core.workspace.workspace import open_workspace
    ws = open_workspace("tiny", data_root)
    out = ws.store.decision_counts()
    out["pending"] = len(ws.store.pseudo_labels()) - sum(out.values())
    ws.store.close()
    return out


@pytest.fixture
def reviewed_root(tmp_path, monkeypatch):
    """A data root with a trained tiny workspace and one round of pseudo-labels; the app points at it."""
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    write_stripes_folder(tmp_path / "stripes")
    ws = create_workspace("tiny", DataConfig(dataset="stripes", val_fraction=0.25), tmp_path)
    assert start_training(ws, tiny_run_config("mpl")).join(60).state == "done"
    assert start_pseudo_labeling(ws).join(60).state == "done"
    from ui import get_studio
    get_studio.clear()  # a fresh Studio for this data root
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_workspace(reviewed_root, page):
    at = app(page, reviewed_root).run()
    assert not at.exception and not at.error


@pytest.mark.parametrize("page", PAGES)
def test_every_page_guides_a_new_user_without_a_workspace(tmp_path, monkeypatch, page):
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    from ui import get_studio
    get_studio.clear()
    at = app(page, tmp_path, workspace=None).run()
    assert not at.exception
    assert at.info or at.warning or at.title[0].value == "Data"


def test_review_threshold_moves_the_counts_and_decisions_stick(reviewed_root):
    """The threshold panel and the bulk actions; the grid's keys are tested in Chromium (test_e2e_review.py)."""
    at = app("app_pages/review.py", reviewed_root).run()
    assert counts(reviewed_root)["pending"] == 40
    at.slider(key="threshold").set_value(0.0).run()
    assert metric(at, "Pass") == "40"
    at.slider(key="threshold").set_value(1.0).run()
    assert metric(at, "Pass") != "40"
    at.slider(key="threshold").set_value(0.0).run()
    at.button(key="bulk-accept").click().run()
    assert counts(reviewed_root)["accept"] == 40
    at.button(key="undo").click().run()
    assert counts(reviewed_root)["accept"] == 0 and counts(reviewed_root)["pending"] == 40
    at.button(key="page-reject").click().run()  # the page on show: 24 tiles
    assert counts(reviewed_root)["reject"] == 24
    at.button(key="page-reject").click().run()  # the page now shows the 16 still pending
    assert counts(reviewed_root)["reject"] == 40
    at.button(key="undo").click().run()
    at.button(key="bulk-accept").click().run()  # only the pending ones
    assert counts(reviewed_root) == {"pending": 0, "accept": 16, "reject": 24, "relabel": 0, "manual": 0}
    assert not at.exception and not at.error


def test_set_thresholds_finds_the_sliders_for_a_precision_to_aim_for(reviewed_root, caplog, monkeypatch):
    from streamlit.elements.lib import policies

    from ui import get_studio
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)  # Streamlit warns once a process
    view = get_studio().review("tiny")
    at = app("app_pages/review.py", reviewed_root).run()
    at.number_input(key="aim").set_value(0.6).run()
    at.button(key="aim-set").click().run()
    (t,) = set(view.aim(0.6).thresholds)
    assert at.slider(key="threshold").value == t
    assert metric(at, "Pass") == f"{view.index.stats(t).passed:,}"
    assert any(str(t) in c.value and "estimate" in c.value for c in at.caption)
    at.slider(key="threshold").set_value(t - 0.01 if t > 0 else 0.5).run()  # moved by hand: the note goes
    assert not any(str(t) in c.value and "estimate" in c.value for c in at.caption)
    at.toggle(key="per_class").set_value(True).run()
    at.button(key="aim-set").click().run()
    per_class = view.aim(0.6, per_class=True).thresholds
    assert [at.slider(key=f"t-{k}").value for k in range(len(per_class))] == per_class
    assert any("Each class at the lowest threshold" in c.value for c in at.caption)
    assert any("Few validation images are predicted as some classes (horizontal" in c.value
               and "turn off Per-class thresholds and press Set" in c.value
               for c in at.caption)  # 2 validation images a class: too few to choose a threshold each on
    from mpl_core.workspace import calibration
    monkeypatch.setattr(calibration.classes_short_of_validation, "__defaults__", (0,))  # enough, here
    at.button(key="aim-set").click().run()
    assert any("a little optimistic" in c.value and "Few validation images" not in c.value for c in at.caption)
    at.number_input(key="aim").set_value(0.9).run()  # 2 validation images a class: no class's estimate reaches it
    at.button(key="aim-set").click().run()
    assert [at.slider(key=f"t-{k}").value for k in range(2)] == view.aim(0.9, per_class=True).thresholds
    assert any("none reaches it for" in c.value for c in at.caption)
    assert not at.exception and not at.error
    assert "set via the Session State API" not in caplog.text  # the sliders' defaults come from the state too


def test_the_page_buttons_decide_the_tiles_on_show_as_they_were_drawn(reviewed_root):
    from ui import get_studio
    at = app("app_pages/review.py", reviewed_root).run()
    shown = at.session_state["review-grid-shown"]["items"]
    assert len(shown) == 24
    get_studio().decide("tiny", shown[:2], "accept", "someone else")  # after this page was drawn
    at.button(key="page-reject").click().run()
    assert any("another reviewer decided 2 of these tiles first" in e.value for e in at.error)
    assert counts(reviewed_root) == {"pending": 16, "accept": 2, "reject": 22, "relabel": 0, "manual": 0}


def test_a_retrain_round_can_fine_tune_the_student_or_teacher_of_the_run_that_made_the_pseudo_labels(reviewed_root):
    from ui import get_studio
    at = app("app_pages/rounds.py", reviewed_root).run()
    next(s for s in at.selectbox if s.label == "Preset").set_value("smoke")
    at.radio[0].set_value("Run 1's student (fine-tune)")
    next(b for b in at.button if b.label == "Start a retrain round").click().run()
    assert not at.exception and not at.error
    status = get_studio().job("tiny").join(120)
    assert status.state == "done", status.error
    run = get_studio().runs("tiny")[-1]
    first = get_studio().runs("tiny")[0]
    start = Path(run["config"]["model"]["init_from"])
    assert run["kind"] == "retrain" and start.is_absolute() and start.name == Path(first["checkpoint"]).name
    assert run["config"]["model"]["width"] == first["config"]["model"]["width"]  # the same model as run 1's
    assert run["config"]["train"]["lr"] == FINETUNE_ROUND_LR and run["config"]["model"]["init_role"] == "student"
    at = app("app_pages/rounds.py", reviewed_root).run()  # the job is over: Start is enabled again
    assert at.radio[0].options == ["Scratch", "Run 1's teacher (fine-tune)", "Run 1's student (fine-tune)"]
    next(s for s in at.selectbox if s.label == "Preset").set_value("smoke")
    at.radio[0].set_value("Run 1's teacher (fine-tune)")  # run 1 is an MPL run: its teacher can start a round
    next(b for b in at.button if b.label == "Start a retrain round").click().run()
    assert not at.exception and not at.error
    assert get_studio().job("tiny").join(120).state == "done"
    run = get_studio().runs("tiny")[-1]
    assert Path(run["config"]["model"]["init_from"]).name == Path(first["checkpoint"]).name
    assert run["config"]["model"]["init_role"] == "teacher"
    at = app("app_pages/rounds.py", reviewed_root).run()
    next(s for s in at.selectbox if s.label == "Algorithm").set_value("uda")
    at.radio[0].set_value("Run 1's student (fine-tune)")
    next(b for b in at.button if b.label == "Start a retrain round").click().run()
    assert any("is for supervised rounds" in e.value for e in at.error)


def test_a_round_from_scratch_takes_the_round_length_and_mixup_chosen(reviewed_root):
    from ui import get_studio
    at = app("app_pages/rounds.py", reviewed_root).run()
    next(s for s in at.selectbox if s.label == "Preset").set_value("smoke")
    assert (at.select_slider[0].value, at.checkbox[0].value) == (RETRAIN_STEPS_FACTOR, RETRAIN_MIXUP) == (6, True)
    at.select_slider[0].set_value(3)  # the defaults' config is build_retrain_config's (test_config.py)
    at.checkbox[0].set_value(False)
    next(b for b in at.button if b.label == "Start a retrain round").click().run()
    assert not at.exception and not at.error
    assert get_studio().job("tiny").join(120).state == "done"
    run = get_studio().runs("tiny")[-1]
    assert (run["config"]["train"]["steps"], run["config"]["algorithm"]["mixup"]) == (
        PRESETS["smoke"]["train"]["steps"] * 3, False)
    assert not run["config"]["model"]["init_from"]


def test_a_round_labeled_by_a_retrained_model_warns_that_its_estimate_is_optimistic(reviewed_root):
    caveat = "pool images whose labels were accepted or given earlier"
    at = app("app_pages/review.py", reviewed_root).run()
    assert not any(caveat in w.value for w in at.warning)  # the MPL teacher trained on no pool label
    ws = open_workspace("tiny", reviewed_root)
    decide_rows(ws, ws.store.pseudo_labels(), np.arange(6), "accept", "ana")
    retrain = start_retrain(ws, tiny_run_config("supervised")).join(60)
    assert retrain.state == "done" and start_pseudo_labeling(ws, retrain.run_id).join(60).state == "done"
    at = app("app_pages/review.py", reviewed_root).run()
    assert not at.exception
    assert any(f"Run {retrain.run_id} trained on 6 {caveat}" in w.value for w in at.warning)


def test_data_page_creates_a_workspace_and_reports_bad_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    from ui import get_studio
    get_studio.clear()
    write_stripes_folder(tmp_path / "mine")
    at = app("app_pages/data.py", tmp_path, workspace=None).run()
    at.text_input[0].set_value("proj")
    at.radio[0].set_value("My images: a folder under the data folder")
    at.text_input[1].set_value("/etc")
    at.button[0].click().run()
    assert any("outside the data folder" in e.value for e in at.error) and not at.exception
    at.text_input[1].set_value("mine")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert metric(at, "Classes") == "2" and metric(at, "Unlabeled") == "40"


def test_faults_show_as_messages_and_the_app_keeps_serving(reviewed_root, full_disk):
    """A full disk during a decision, a failed job and an OOM note: messages on the page, no traceback."""
    from mpl_core.service.job import TrainingJob
    from ui import get_studio

    at = app("app_pages/review.py", reviewed_root).run()
    full_disk(True)
    at.button(key="page-accept").click().run()
    assert not at.exception
    assert any("disk is full" in e.value and "Free disk space" in e.value for e in at.error)
    full_disk(False)
    at = app("app_pages/review.py", reviewed_root).run()
    assert counts(reviewed_root)["accept"] == 0 and counts(reviewed_root)["pending"] == 40  # nothing half-saved

    def failing(job):
        job.note("out of GPU memory at batch size 64; retrying with batch size 32 from the last checkpoint")
        raise ZeroDivisionError("boom")

    studio = get_studio()
    ws = studio.open("tiny")
    job = TrainingJob(ws, "train", failing).start()
    job.join(10)
    studio.adopt("tiny", job)  # as if started from the Train page
    at = app("app_pages/train.py", reviewed_root).run()
    assert not at.exception
    assert any("ZeroDivisionError" in e.value and "boom" in e.value for e in at.error)
    assert any("retrying with batch size 32" in w.value for w in at.warning)
    for page in PAGES:  # every page still renders
        assert not app(page, reviewed_root).run().exception


def test_a_job_from_another_process_shows_its_progress_and_blocks_starts(reviewed_root):
    """torchrun or the CLI training in the workspace: the Train page shows who and how far."""
    import time

    from mpl_core.service.lock import JobLock
    from mpl_core.workspace.workspace import open_workspace
    ws = open_workspace("tiny", reviewed_root)
    run_id = ws.store.create_run("train", tiny_run_config("mpl").to_dict())
    ws.store.add_metrics(run_id, 3, "train", {"t_loss": 1.0})
    lock = JobLock(ws.lock_path)  # another open file: held against this process's checks too
    lock.acquire({"kind": "train", "pid": 4242, "started": time.time(), "run_id": run_id})
    try:
        at = app("app_pages/train.py", reviewed_root).run()
        assert not at.exception
        assert any("started outside the app" in i.value and "process 4242" in i.value for i in at.info)
        assert next(b for b in at.button if b.label == "Start training").disabled
        bars = [e.proto.text for e in at.get("progress")]
        assert any(f"run {run_id} · train · step 3/6" in text for text in bars), bars
    finally:
        lock.release()
    at = app("app_pages/train.py", reviewed_root).run()
    assert not any("outside the app" in i.value for i in at.info)
    assert not next(b for b in at.button if b.label == "Start training").disabled


def test_the_home_page_shows_the_numbers_the_demo_job_produced(fmnist, tmp_path, monkeypatch):
    from mpl_core.config import AlgorithmConfig, ModelConfig, RunConfig, TrainConfig
    from ui import get_studio
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    get_studio.clear()
    studio = get_studio()
    studio.create("demo", DataConfig(max_unlabeled=300))
    train = dict(steps=20, eval_every=0, batch_size=16, mu=2, device="cpu")
    supervised = dict(model=ModelConfig(width=4), algorithm=AlgorithmConfig(name="supervised"))
    job = studio.start("demo", "demo",
                       cfg=RunConfig(model=ModelConfig(width=4), algorithm=AlgorithmConfig(name="mpl"),
                                     train=TrainConfig(finetune_steps=5, **train)),
                       retrain_cfg=RunConfig(**supervised, train=TrainConfig(**train)),
                       full_retrain_cfg=RunConfig(model=ModelConfig(width=4),
                                                  algorithm=AlgorithmConfig(name="supervised", mixup=True),
                                                  train=TrainConfig(**train, trusted_share=0.5)),
                       baseline_cfg=RunConfig(**supervised, train=TrainConfig(**{**train, "steps": 25})),
                       budget_s=3600.0, target_precision=0.5)
    status = job.join(300)
    assert status.state == "done", status.error
    r = status.result
    at = app("app_pages/home.py", tmp_path, workspace="demo").run()
    assert not at.exception and not at.error
    import ui
    best = next(s for s in r["stages"] if s["name"] == r["retrain_gain_over"])  # on validation, among 3 models
    assert best["val_acc"] == max(s["val_acc"] for s in r["stages"][:3])
    assert metric(at, "Best model before the retrain") == ui.pct(best["test_acc"])
    assert metric(at, "After the retrain") == ui.pct(r["after_test_acc"])
    after = next(m for m in at.metric if m.label == "After the retrain")
    assert after.proto.delta == ui.points(r["after_test_acc"] - best["test_acc"])  # the gain over that model
    retrain = after.help  # says what the gain is over, which round ran, and why
    assert retrain.startswith(f"gain over {best['name']}; ")
    assert r["retrain_from"] == "scratch" and "; a new model trained from scratch" in retrain
    assert "50% of each batch" in retrain and "with mixup" in retrain
    assert f"end the demo at {r['projected_s']:.0f} s, within its 3600 s" in retrain
    assert metric(at, "Pseudo-labels accepted") == f"{r['accepted']:,}"
    assert metric(at, "90% interval") == ui.interval(r["est_low"], r["est_high"])
    assert metric(at, "True precision") == ui.pct(r["true_precision"])
    truth = next(m for m in at.metric if m.label == "True precision").help  # and whether the interval held it
    assert r["truth_inside"] == (r["est_low"] <= r["true_precision"] <= r["est_high"])
    assert ("inside the 90% interval" in truth) == r["truth_inside"] != ("outside the 90% interval" in truth)
    assert metric(at, f"After {r['reviewed']} simulated review decisions") == ui.pct(r["after_review_test_acc"])
    review = next(m for m in at.metric if m.label == f"After {r['reviewed']} simulated review decisions").help
    assert "is not known here yet: once someone has reviewed" in review  # the oracle's speed is no one's pace
    assert r["review_from"] == "scratch" and "; a second round from scratch" in review
    assert "two rounds from scratch were projected" in retrain
    assert metric(at, "Pseudo-labels corrected by the review") == f"{r['review_relabeled']:,}"
    chart = at.get("plotly_chart")[0].proto.spec
    for key in ("supervised_test_acc", "before_test_acc", "teacher_test_acc", "after_test_acc",
                "after_review_test_acc"):
        assert f"{100 * r[key]:.1f}%" in chart  # the chart's bars are the same numbers
    assert "labels alone (supervised)" in chart and f"vs {best['name'].split(' (')[0]}" in chart
    import time
    from types import SimpleNamespace

    from mpl_core.workspace import store as store_module
    clock = [time.time()]
    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=lambda: clock[0]))
    for i in range(3):  # a person reviews here at 3 s a decision: the demo's 100 would take 5 minutes
        clock[0] += 3
        studio.decide("demo", [i], "accept", "ana", seen=True)
    at = app("app_pages/home.py", tmp_path, workspace="demo").run()
    review = next(m for m in at.metric if m.label == f"After {r['reviewed']} simulated review decisions").help
    assert "At the pace measured from this workspace's reviewers, 3.0 s a decision" in review
    assert f"{r['reviewed']} decisions take about {ui.fmt_eta(r['reviewed'] * 3.0)}" in review
    runs = studio.runs("demo")  # both rounds from scratch fitted the budget: neither starts from a model
    assert [run["kind"] for run in runs] == ["train", "train", "retrain", "retrain"]  # labels alone, then MPL
    assert [run["config"]["model"]["init_from"] for run in runs[2:]] == ["", ""]
    assert runs[2]["config"]["train"]["trusted_share"] == 0.5 and runs[2]["config"]["train"]["threads"] > 0


def test_the_server_does_not_walk_every_object_after_each_script_run():
    # Streamlit's default post-run gc.collect(2) costs 100-250 ms per run with torch loaded, and
    # the review grid reruns its fragment for every decision (bench/review_keys.py).
    config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


def test_the_review_and_rounds_pages_show_the_pace_and_the_review_behind_each_round(reviewed_root, monkeypatch):
    import time
    from types import SimpleNamespace

    from mpl_core.workspace import store as store_module
    from ui import get_studio
    clock = [time.time() + 10]  # after run 1 was created
    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=lambda: clock[0]))
    studio = get_studio()
    retrain = tiny_run_config("supervised")
    assert start_retrain(open_workspace("tiny", reviewed_root), retrain).join(60).state == "done"
    at = app("app_pages/rounds.py", reviewed_root).run()  # a round with no review before it: no chart of it
    assert not any("What the review time bought" in c.proto.spec for c in at.get("plotly_chart"))
    for i in range(5):  # the page's reviewer, 2 s a key
        clock[0] += 2
        studio.decide("tiny", [i], "accept", "reviewer", seen=True)
    studio.decide("tiny", list(range(5, 40)), "accept", "reviewer")  # by threshold: not timed
    at = app("app_pages/review.py", reviewed_root).run()
    assert not at.exception
    pace = next(c.value for c in at.caption if c.value.startswith("Your pace:"))
    assert "2.0 s a decision, about 1,800 an hour (4 decisions timed in 1 sitting)" in pace
    assert "Everyone who has not set a name in the sidebar shares this one" in pace  # the default name
    clock[0] += 1
    assert start_retrain(open_workspace("tiny", reviewed_root), retrain).join(60).state == "done"
    at = app("app_pages/rounds.py", reviewed_root).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert table["decisions before"].tolist() == [0, 0, 5]
    assert table["review minutes before"].tolist() == pytest.approx([0, 0, 8 / 60])
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("What the review time bought" in spec for spec in charts)


def test_the_home_page_creates_the_demo_workspace_with_more_labels_held_out_for_the_estimate(fmnist, tmp_path,
                                                                                             monkeypatch):
    from mpl_core.presets import DEMO_VAL_PER_CLASS
    from ui import get_studio
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    get_studio.clear()
    at = app("app_pages/home.py", tmp_path, workspace=None).run()
    assert f"{DEMO_VAL_PER_CLASS} held out to estimate the precision" in at.info[0].value
    next(b for b in at.button if b.label == "Create the Fashion-MNIST demo workspace").click().run()
    assert not at.exception and not at.error
    sizes = get_studio().summary("fashion-demo")["sizes"]
    assert sizes["labeled"] == 10 * 10 and sizes["val"] == DEMO_VAL_PER_CLASS * 10 == 2000


def test_a_finished_run_shows_the_model_it_hands_back_and_its_gain(reviewed_root):
    from ui import get_studio
    studio = get_studio()
    job = studio.start("tiny", "train", cfg=tiny_run_config("supervised"))
    assert job.join(60).state == "done"
    at = app("app_pages/train.py", reviewed_root).run()
    assert not at.exception
    import ui
    runs = studio.runs("tiny")
    mpl, sup = runs[0]["metrics"], runs[-1]["metrics"]
    assert mpl["hands_back"] in ("teacher", "student") and sup["hands_back"] == "student"
    # the stripes data has a labeled test split: the panel shows test accuracy, and which model it is
    assert metric(at, "Hands back: the student, test accuracy") == ui.pct(sup["test_acc"])
    _, best_val, best_test = (("teacher", mpl["teacher_val_acc"], mpl["teacher_test_acc"])
                              if mpl["hands_back"] == "teacher" else ("student", mpl["val_acc"], mpl["test_acc"]))
    gain = next(m for m in at.metric if m.label == "Gain over the best model before")
    assert gain.value == ui.points(sup["test_acc"] - best_test)
    assert f"run {runs[0]['id']} (mpl {mpl['hands_back']})" in gain.help


def test_the_train_page_says_how_long_the_run_takes_before_start(reviewed_root):
    """The issue's new user: before Start, the run's time on this machine, timed by a probe in the
    background (kept tiny here) for the settings chosen; after a run of the same settings, its rate."""
    import time

    from ui import get_studio
    at = app("app_pages/train.py", reviewed_root).run()
    next(s for s in at.selectbox if s.label == "Preset").set_value("smoke").run()
    assert any("Timing a few steps of this run" in i.value for i in at.info) or any(
        i.value.startswith("About") for i in at.info)
    deadline = time.monotonic() + 60
    while not any(i.value.startswith("About") for i in at.info) and time.monotonic() < deadline:
        time.sleep(0.3)
        at.run()
    line = next(i.value for i in at.info if i.value.startswith("About")).replace("\\", "")  # ui.plain's escapes
    assert "on this machine (timed: " in line and "s a step over" in line, line
    assert not at.exception and not next(b for b in at.button if b.label == "Start training").disabled
    at.number_input[0].set_value(20).run()  # more steps: the same probe, another estimate
    assert any(i.value.startswith("About") and "timed" in i.value for i in at.info)
    assert next(c for c in at.checkbox if c.label == "First train on the labels alone, for comparison").value
    next(b for b in at.button if b.label == "Start training").click().run()
    assert get_studio().job("tiny").join(120).state == "done"
    alone, mpl = get_studio().runs("tiny")[-2:]  # the labels alone first, by default, then the run chosen
    assert alone["config"]["algorithm"]["name"] == "supervised" and mpl["metrics"]["labels_alone_run"] == alone["id"]
    at = app("app_pages/train.py", reviewed_root).run()
    next(s for s in at.selectbox if s.label == "Preset").set_value("smoke").run()
    run_id = get_studio().runs("tiny")[-1]["id"]
    assert any(f"at the rate run {run_id} measured" in i.value for i in at.info), [i.value for i in at.info]
