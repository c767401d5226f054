"""Review pace: seconds a decision measured from when decisions were saved (mpl_core/workspace/pace.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.service.cli import main
from mpl_core.service.studio import Studio
from mpl_core.workspace import pace
from mpl_core.workspace import store as store_module
from mpl_core.workspace.simulate import WHO as SIMULATED
from mpl_core.workspace.store import Store


class Clock:
    """Stands in for the store's clock: each decision is saved at the time the test sets."""

    def __init__(self):
        self.now = 1_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=c.time))
    return c


def test_a_sitting_times_the_saves_after_its_first_and_a_long_gap_is_a_break():
    p = pace.measure([(0.0, 1), (3.0, 1), (5.0, 2), (300.0, 1), (304.0, 1)])
    # sitting 1: 3 s for 1, then 2 s for 2; the break; sitting 2: 4 s for 1
    assert (p.decisions, p.seconds, p.sittings, p.total) == (4, 9.0, 2, 6)
    assert p.per_decision == pytest.approx(2.25) and p.per_hour == pytest.approx(1600)
    assert p.summary() == "2.2 s a decision, about 1,600 an hour (4 decisions timed in 2 sittings)"
    assert p.seconds_for(100) == pytest.approx(225)
    assert pace.measure([(10.0, 1), (0.0, 1)]) == pace.measure([(0.0, 1), (10.0, 1)])  # any order
    assert pace.measure([(0.0, 1), (61.0, 1)], break_s=60).decisions == 0
    assert pace.measure([(0.0, 1), (61.0, 1)], break_s=120).seconds == 61.0


def test_a_page_decided_at_once_may_follow_a_longer_look():
    # 24 tiles accepted at once 150 s after the last save: 60 s + 5 s for each of the 23 further tiles allows it
    page = pace.measure([(0.0, 1), (150.0, 24)])
    assert (page.decisions, page.seconds, page.sittings) == (24, 150.0, 1)
    assert pace.measure([(0.0, 1), (150.0, 1)]).decisions == 0  # one key after 150 s: a break
    assert pace.measure([(0.0, 1), (200.0, 24)]).decisions == 0  # over 175 s: a break


def test_no_timed_decision_gives_no_pace():
    for saves in ([], [(5.0, 24)], [(0.0, 1), (500.0, 1)]):
        p = pace.measure(saves)
        assert p.per_decision is None and p.per_hour is None and p.summary() == "" and p.seconds_for(100) is None


def test_reviewers_working_at_once_keep_their_own_sittings():
    saves = [("ana", 0.0, 1), ("bo", 1.0, 1), ("ana", 4.0, 1), ("bo", 11.0, 1), ("ana", 8.0, 1), (SIMULATED, 9.0, 50)]
    paces = pace.by_reviewer(saves, leave_out=[SIMULATED])
    assert set(paces) == {"ana", "bo"}
    assert paces["ana"].per_decision == pytest.approx(4.0) and paces["bo"].per_decision == pytest.approx(10.0)
    everyone = pace.overall(paces)
    assert (everyone.decisions, everyone.seconds) == (3, 18.0)
    early = pace.by_reviewer(saves, until=5.0, leave_out=[SIMULATED])
    assert early["ana"].decisions == 1 and early["bo"].decisions == 0
    assert pace.overall({}) == pace.Pace()


def test_the_pace_before_each_time_is_the_pace_of_the_saves_before_it():
    rng = np.random.default_rng(0)
    saves = [(str(rng.choice(["ana", "bo", SIMULATED])), float(t), int(rng.integers(1, 30)))
             for t in np.cumsum(rng.exponential(20, 300))]
    untils = [0.0, *sorted(rng.uniform(0, saves[-1][1] + 10, 20)), saves[-1][1], saves[-1][1] + 1]
    fast = pace.before_each(saves, untils, leave_out=[SIMULATED])
    slow = [pace.overall(pace.by_reviewer(saves, until=u, leave_out=[SIMULATED])) for u in untils]
    assert [(p.decisions, p.sittings, p.total) for p in fast] == [(p.decisions, p.sittings, p.total) for p in slow]
    assert [p.seconds for p in fast] == pytest.approx([p.seconds for p in slow])
    assert fast[0] == pace.Pace() and fast[-1].total > fast[-2].total  # the last save counts only after it


def test_the_store_times_decisions_made_looking_at_images_not_those_by_threshold(tmp_path, clock):
    store = Store(tmp_path / "s.sqlite")
    store.decide([("a", 0), ("b", 1)], "accept", 1, who="ana", seen=True)  # a page accepted at 1,000 s
    clock.now += 2.5
    store.decide([(f"t{i}", 10 + i) for i in range(100)], "accept", 1, who="ana")  # by threshold: not a pace
    clock.now += 0.5
    store.decide([("c", 2)], "relabel", 3, who="ana", seen=True)
    clock.now += 4
    store.decide([("d", 3)], "reject", 1, who="ana", seen=True)
    store.undo_last()  # the time of an undone decision was spent all the same
    assert store.seen_saves() == [("ana", 1000.0, 2), ("ana", 1003.0, 1), ("ana", 1007.0, 1)]
    p = pace.measure((at, n) for _, at, n in store.seen_saves())
    assert (p.decisions, p.seconds, p.total) == (2, 7.0, 4)


def test_the_studio_leaves_out_the_simulated_reviewer_and_counts_the_review_before_each_run(tmp_path, clock):
    write_stripes_folder(tmp_path / "stripes")
    studio = Studio(tmp_path)
    ws = studio.create("tiny", DataConfig(dataset="stripes", val_fraction=0.25))
    first = ws.store.create_run("train", {})
    for i in range(4):  # ana: 3 s a decision
        clock.now += 3
        ws.store.decide([(f"s{i}", i)], "accept", 0, who="ana", seen=True)
    clock.now += 1
    ws.store.decide([(f"x{i}", 10 + i) for i in range(100)], "relabel", 1, who=SIMULATED, seen=True)
    clock.now += 1
    second = ws.store.create_run("retrain", {})
    clock.now += 2
    ws.store.decide([("s9", 9)], "reject", 0, who="ana", seen=True)
    assert set(studio.review_pace("tiny")) == {"ana"}
    assert studio.review_pace("tiny")["ana"].per_decision == pytest.approx(13 / 4)  # 3, 3, 3 and 4 s
    behind = studio.review_behind_runs("tiny")
    assert behind[first] == pace.Pace()
    assert (behind[second].total, behind[second].decisions, behind[second].seconds) == (4, 3, 9.0)
    # a round resumed after more review read its labels again, later: the review behind it counts to then
    ws.store.update_run(second, metrics={"reviewed_at": clock.now + 1})
    assert studio.review_behind_runs("tiny")[second].total == 5


def test_a_round_records_when_it_read_the_decisions_by_the_stores_clock(tiny_workspace, clock):
    from mpl_core.workspace.review import reviewed_training_set
    clock.now = 5_000.0
    assert reviewed_training_set(tiny_workspace).read_at == 5_000.0


def test_the_cli_status_prints_each_reviewers_pace(tmp_path, clock, capsys):
    write_stripes_folder(tmp_path / "stripes")
    ws = ["--workspace", "w", "--data-root", str(tmp_path)]
    studio = Studio(tmp_path)
    store = studio.create("w", DataConfig(dataset="stripes", val_fraction=0.25)).store
    for i, who in enumerate(["ana", "bo", "ana", "bo", "ana"]):
        clock.now += 2
        store.decide([(f"s{i}", i)], "accept", 0, who=who, seen=True)
    assert main(["status", *ws]) == 0
    out = capsys.readouterr().out
    ana = "review pace, ana: 4.0 s a decision, about 900 an hour (2 decisions timed in 1 sitting), 0.1 min in all"
    assert ana in out
    assert "review pace, bo: 4.0 s a decision" in out and "review pace, everyone: 4.0 s a decision" in out
