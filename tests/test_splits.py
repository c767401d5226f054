import torch

from mpl_core.config import DataConfig
from mpl_core.data.sources import load_dataset
from mpl_core.data.splits import make_split


def test_builtin_split_is_deterministic_disjoint_and_balanced(fmnist):
    cfg = DataConfig(labels_per_class=10, val_per_class=5, seed=3)
    a, b = make_split(fmnist, cfg), make_split(fmnist, cfg)
    for part in ("labeled", "val", "unlabeled"):
        assert torch.equal(getattr(a, part), getattr(b, part))
    sets = [set(a.labeled.tolist()), set(a.val.tolist()), set(a.unlabeled.tolist())]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(map(len, sets)) == len(fmnist.train)  # every pool image is somewhere
    assert torch.bincount(fmnist.train.labels[a.labeled], minlength=10).tolist() == [10] * 10
    assert torch.bincount(fmnist.train.labels[a.val], minlength=10).tolist() == [5] * 10


def test_other_seed_gives_other_labels(fmnist):
    a = make_split(fmnist, DataConfig(seed=0))
    b = make_split(fmnist, DataConfig(seed=1))
    assert not torch.equal(a.labeled, b.labeled)


def test_test_split_never_enters_the_split(fmnist):
    split = make_split(fmnist, DataConfig())
    pool_ids = {fmnist.train.ids[i] for i in torch.cat([split.labeled, split.val, split.unlabeled]).tolist()}
    assert not pool_ids & set(fmnist.test.ids)
    assert all(i.startswith("train/") for i in pool_ids)


def test_max_unlabeled_caps_the_pool(fmnist):
    split = make_split(fmnist, DataConfig(max_unlabeled=500))
    assert len(split.unlabeled) == 500


def test_own_images_split_keeps_unlabeled_apart(image_folder):
    ds = load_dataset(str(image_folder))
    split = make_split(ds, DataConfig(val_fraction=0.2, seed=0))
    assert (ds.train.labels[split.unlabeled] == -1).all()
    assert (ds.train.labels[split.labeled] >= 0).all() and (ds.train.labels[split.val] >= 0).all()
    assert len(split.val) == 3  # one per class of six (20% rounds to 1)
    assert len(split.labeled) == 15 and len(split.unlabeled) == 10


def test_own_images_hold_out_val_per_class_where_a_class_keeps_enough_to_train_on(image_folder):
    from mpl_core.data.splits import MIN_TRAIN_PER_CLASS, held_out
    cfg = DataConfig(val_per_class=50)
    assert held_out(3, cfg) == 0 and held_out(MIN_TRAIN_PER_CLASS, cfg) == 0  # all of them train
    assert held_out(MIN_TRAIN_PER_CLASS + 7, cfg) == 7  # what is left over the ten, up to 50
    assert held_out(MIN_TRAIN_PER_CLASS + 80, cfg) == 50
    assert held_out(10, DataConfig(val_fraction=0.2)) == 2  # a workspace made before keeps its share
    ds = load_dataset(str(image_folder))  # 6 labels a class
    split = make_split(ds, DataConfig(seed=0))
    assert len(split.val) == 0 and len(split.labeled) == 18
