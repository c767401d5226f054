import torch

from mpl_core.engine.augment import make_batch, strong_view, to_float, weak_view


def batch(n=64, c=3, size=16):
    g = torch.Generator().manual_seed(0)
    return to_float(torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8))


def test_views_keep_shape_and_range():
    x = batch()
    for view in (weak_view, strong_view):
        y = view(x, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 1


def test_same_seed_same_views_and_other_seed_differs():
    x = batch()
    a = strong_view(x, torch.Generator().manual_seed(5))
    b = strong_view(x, torch.Generator().manual_seed(5))
    c = strong_view(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_strong_view_changes_images_per_sample():
    x = batch(n=32, c=1)
    y = strong_view(x, torch.Generator().manual_seed(2))
    changed = (y - x).abs().flatten(1).mean(1)
    assert (changed > 0.01).float().mean() > 0.9  # cutout alone changes nearly every image
    assert changed.std() > 0.005  # different ops and magnitudes per sample


def test_weak_view_without_flip_or_pad_is_identity():
    x = batch()
    assert torch.equal(weak_view(x, torch.Generator().manual_seed(0), flip=False, pad=0), x)


def test_a_strong_labeled_view_is_the_strong_view_of_the_labeled_images():
    """labeled_view="strong" (a noised student for retrain rounds) changes only the labeled batch."""
    from mpl_core.engine.augment import make_batch
    images = torch.randint(0, 256, (20, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.arange(20) % 2
    li, ui = torch.arange(4), torch.arange(4, 12)
    weak = make_batch(images, labels, li, ui, torch.Generator().manual_seed(3))
    strong = make_batch(images, labels, li, ui, torch.Generator().manual_seed(3), labeled_view="strong")
    assert torch.equal(strong.x_l, strong_view(to_float(images[li]), torch.Generator().manual_seed(3)))
    assert not torch.equal(strong.x_l, weak.x_l) and torch.equal(strong.y_l, weak.y_l)


def test_mixup_blends_each_labeled_image_with_another_of_the_batch():
    images = torch.randint(0, 256, (16, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.arange(16)  # each image its own label, so y_mix names the image it was mixed with
    idx = torch.arange(16)
    plain = make_batch(images, labels, idx, None, torch.Generator().manual_seed(3), flip=False)
    mixed = make_batch(images, labels, idx, None, torch.Generator().manual_seed(3), flip=False, mixup=True)
    assert plain.lam is None and plain.y_mix is None
    assert torch.equal(mixed.y_l, labels) and sorted(mixed.y_mix.tolist()) == list(range(16))
    assert ((mixed.lam >= 0) & (mixed.lam <= 1)).all() and mixed.lam.std() > 0  # per image
    lam = mixed.lam[:, None, None, None]
    expected = lam * plain.x_l + (1 - lam) * plain.x_l[mixed.y_mix]  # the same weak views, then blended
    assert torch.allclose(mixed.x_l, expected, atol=1e-6)
    assert not torch.allclose(mixed.x_l, plain.x_l)
