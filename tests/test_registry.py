"""The algorithm registry: one record per name in config.ALGORITHMS, which the training loop reads
instead of testing algorithm names."""
import pytest

from conftest import tiny_config
from mpl_core.config import ALGORITHMS, AlgorithmConfig
from mpl_core.data.splits import make_split
from mpl_core.engine.algorithms import (
    ALGORITHM_REGISTRY,
    SINGLE_MODEL_STEPS,
    get_algorithm,
    mpl_step,
    supervised_step,
)
from mpl_core.engine.train import train
from mpl_core.errors import MPLStudioError


def test_registry_names_are_the_configs_algorithms_in_order():
    assert tuple(ALGORITHM_REGISTRY) == ALGORITHMS  # config cannot import the engine: this keeps them equal


def test_what_each_algorithm_asks_of_the_loop():
    assert {n for n, a in ALGORITHM_REGISTRY.items() if a.teacher} == {"mpl"}
    assert {n for n, a in ALGORITHM_REGISTRY.items() if a.finetune} == {"mpl"}
    assert {n for n, a in ALGORITHM_REGISTRY.items() if not a.unlabeled} == {"supervised"}
    assert get_algorithm("mpl").step is mpl_step and get_algorithm("supervised").step is supervised_step
    for views in ("joint", "separate"):
        cfg = AlgorithmConfig(view_batches=views)
        several = {n for n, a in ALGORITHM_REGISTRY.items() if a.several_forwards(cfg)}
        assert several == ({"mpl"} if views == "separate" else set())
    with pytest.raises(MPLStudioError, match="unknown algorithm 'fixmatch'"):
        get_algorithm("fixmatch")


def test_single_model_steps_is_a_live_view_of_the_registry(monkeypatch):
    assert list(SINGLE_MODEL_STEPS) == ["supervised", "pseudo_label", "uda"] and "mpl" not in SINGLE_MODEL_STEPS
    with pytest.raises(KeyError):
        SINGLE_MODEL_STEPS["mpl"] = supervised_step  # MPL's step takes a teacher: not swappable here

    def other(*args):
        return {}

    with monkeypatch.context() as m:
        m.setitem(SINGLE_MODEL_STEPS, "uda", other)
        assert get_algorithm("uda").step is other
    assert get_algorithm("uda").step is SINGLE_MODEL_STEPS["uda"] is not other  # undone


def test_the_loop_runs_the_registered_step(tiny_dataset, monkeypatch):
    cfg = tiny_config("supervised", steps=4, eval_every=0)
    honest, steps = SINGLE_MODEL_STEPS["supervised"], []

    def counting(learner, batch, algorithm_cfg, step):
        steps.append(step)
        return honest(learner, batch, algorithm_cfg, step)

    monkeypatch.setitem(SINGLE_MODEL_STEPS, "supervised", counting)
    train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data))
    assert steps == [0, 1, 2, 3]
