"""The algorithm registry: one record per name in config.ALGORITHMS, which the training loop reads
instead of testing algorithm names."""
import pytest

from conftest import swap_step, tiny_config
from mpl_core.config import ALGORITHMS, AlgorithmConfig
from mpl_core.data.splits import make_split
from mpl_core.engine.algorithms import (
    ALGORITHM_REGISTRY,
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


def test_the_loop_runs_the_registered_step(tiny_dataset, monkeypatch):
    cfg = tiny_config("supervised", steps=4, eval_every=0)
    honest, steps = get_algorithm("supervised").step, []

    def counting(learner, batch, algorithm_cfg, step):
        steps.append(step)
        return honest(learner, batch, algorithm_cfg, step)

    swap_step(monkeypatch, "supervised", counting)
    train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data))
    assert steps == [0, 1, 2, 3]
