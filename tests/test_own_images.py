"""Own images as they are: the import cache, native-resolution display, pretrained backbones."""
import base64
import dataclasses
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from mpl_core.config import DataConfig, ModelConfig
from mpl_core.data import imagefolder
from mpl_core.data.imagefolder import auto_image_size
from mpl_core.data.splits import make_split
from mpl_core.engine.inference import bf16_autocast_applies
from mpl_core.engine.models import build_model
from mpl_core.engine.state import load_model, make_learner
from mpl_core.engine.train import train
from mpl_core.errors import MPLStudioError
from mpl_core.workspace import media
from mpl_core.workspace.workspace import create_workspace, open_workspace

CLASSES = ("cat", "dog", "fox")


def _photo(rng, size: tuple[int, int], c: int, mode: str) -> Image.Image:
    """A blob of a class colour on noise: w x h, in the given PIL mode."""
    w, h = size
    arr = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    arr[h // 4: 3 * h // 4, w // 4: 3 * w // 4, c] = 230
    img = Image.fromarray(arr)
    return img.convert(mode) if mode != "RGB" else img


def write_photos(root, rng=None, per_class: int = 4, unlabeled: int = 9):
    """Colour images of 96 to 300 px in JPEG (RGB, CMYK), PNG (RGBA, P) and gray PNG."""
    rng = rng or np.random.default_rng(0)
    kinds = [("RGB", "jpg"), ("RGBA", "png"), ("P", "png"), ("CMYK", "jpg"), ("L", "png")]
    n = 0
    for section, count in (("labeled", per_class), ("unlabeled", unlabeled)):
        for c, name in enumerate(CLASSES):
            folder = root / section / name if section == "labeled" else root / "unlabeled"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count if section == "labeled" else count // 3):
                mode, ext = kinds[n % len(kinds)]
                size = (96 + (n * 37) % 205, 96 + (n * 53) % 205)
                _photo(rng, size, c, mode).save(folder / f"{name}_{i}.{ext}")
                n += 1
    return root


@pytest.fixture
def photos_ws(tmp_path, monkeypatch):
    monkeypatch.setattr("mpl_core.workspace.workspace.device_kind", lambda: "cpu")
    data = tmp_path / "data"
    write_photos(data / "photos")
    ws = create_workspace("photos", DataConfig(dataset="photos", val_fraction=0.25), data)
    return ws


def test_auto_training_size_follows_the_images_and_the_device():
    assert auto_image_size([(28, 28)] * 5, gray=True) == 28
    assert auto_image_size([(32, 32)] * 5, gray=False) == 32
    assert auto_image_size([(256, 200)] * 5, gray=False, device_kind="cpu") == 64
    assert auto_image_size([(256, 200)] * 5, gray=False, device_kind="cuda") == 128
    assert auto_image_size([(48, 60)] * 5, gray=False, device_kind="cuda") == 48  # never above the images


def test_photos_import_at_the_training_size_and_show_at_their_own(photos_ws):
    ds = photos_ws.dataset()
    report = ds.report
    assert report.skipped == [] and report.mode == "RGB" and tuple(ds.train.images.shape[1:]) == (3, 64, 64)
    assert report.native["width"][0] >= 96 and report.native["width"][2] <= 300
    assert "native sizes: width" in "\n".join(report.summary_lines())
    source = photos_ws.data_root / "photos"
    for i, sample in enumerate(ds.train.ids):
        assert (source / sample).is_file()  # every image stays reachable by its id
        thumb = Image.open(io.BytesIO(ds.media.thumbnail(i)))
        native = Image.open(source / sample).size
        assert min(thumb.size) == min(160, min(native))  # at least 96 px, never the 64-px training copy
    assert media.source_notes(ds, list(range(len(ds.train)))) == [""] * len(ds.train)


def test_the_cache_is_reused_after_a_restart_and_rebuilt_for_a_new_size(photos_ws, monkeypatch):
    first = photos_ws.dataset().train.images.clone()

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "_decode_entry", no_decoding)
    again = open_workspace("photos", photos_ws.data_root).dataset()  # a new process would do the same
    assert torch.equal(again.train.images, first)
    monkeypatch.undo()
    monkeypatch.setattr("mpl_core.workspace.workspace.device_kind", lambda: "cpu")
    ws = open_workspace("photos", photos_ws.data_root)
    ws.set_image_size(32)
    assert tuple(ws.dataset().train.images.shape[1:]) == (3, 32, 32)
    assert tuple(open_workspace("photos", photos_ws.data_root).dataset().train.images.shape[1:]) == (3, 32, 32)
    assert [p.name for p in (ws.root / "cache").iterdir()] == ["size-32"]  # the old size's cache is gone
    with pytest.raises(MPLStudioError, match="16 to 512"):
        ws.set_image_size(4)


def test_a_changed_folder_cannot_be_imported_again_under_the_same_workspace(photos_ws):
    ids = photos_ws.dataset().train.ids
    (photos_ws.data_root / "photos" / ids[-1]).unlink()
    with pytest.raises(MPLStudioError, match="changed since this workspace imported them"):
        photos_ws.set_image_size(48)
    assert photos_ws.data.image_size == 0 and len(photos_ws.dataset().train) > 0


def test_a_source_file_gone_or_changed_after_the_import_is_said_on_its_tile(photos_ws):
    ds = photos_ws.dataset()
    source = photos_ws.data_root / "photos"
    gone, changed = len(ds.train) - 1, len(ds.train) - 2  # two unlabeled images
    (source / ds.train.ids[gone]).unlink()
    (source / ds.train.ids[changed]).write_bytes(b"not an image any more")
    notes = media.source_notes(ds, [gone, changed, 0])
    assert notes == ["source file gone since the import", "source file changed since the import", ""]
    for i in (gone, changed):  # the lightbox and the exports fall back to the cached thumbnail
        assert media.large_uri(ds, i).startswith("data:image/")
        Image.open(io.BytesIO(media.export_image(ds, i))).load()
    assert media.export_image(ds, 0) == (source / ds.train.ids[0]).read_bytes()


def _served(uri: str) -> Image.Image:
    """The image a data URI carries, decoded as the browser would."""
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    img.load()
    return img


def _see_through(root) -> None:
    """A 200x150 RGBA PNG whose left half is transparent white, a 40x30 palette PNG with a transparent
    colour, and a 120x80 JPEG that EXIF turns a quarter (shown 80x120)."""
    rgba = np.zeros((150, 200, 4), dtype=np.uint8)
    rgba[:, :100] = (255, 255, 255, 0)  # white under alpha 0: the model must see black, not white
    rgba[:, 100:] = (30, 160, 60, 255)
    Image.fromarray(rgba).save(root / "unlabeled" / "clear.png")
    pal = Image.new("P", (40, 30), 0)
    pal.putpalette([0, 0, 0, 200, 30, 30])
    pal.paste(1, (20, 0, 40, 30))
    pal.save(root / "unlabeled" / "clear_palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show
    _photo(np.random.default_rng(1), (120, 80), 0, "RGB").save(root / "unlabeled" / "turned.jpg", exif=exif)


def test_transparent_images_keep_their_alpha_to_the_lightbox_and_jpegs_still_show(tmp_path):
    root = write_photos(tmp_path / "photos", per_class=2, unlabeled=3)
    _see_through(root)
    report, ds = imagefolder.inspect_image_folder(root, cache_dir=tmp_path / "cache")
    assert ds is not None and report.skipped == []
    ids = ds.train.ids
    i = ids.index("unlabeled/clear.png")
    zoom = media.large_image(ds, i)
    assert zoom["image"].startswith("data:image/png;base64,") and (zoom["width"], zoom["height"]) == (200, 150)
    served = _served(zoom["image"])
    alpha = np.asarray(served.getchannel("A"))
    assert served.mode == "RGBA" and served.size == (200, 150)
    assert alpha[:, :98].max() == 0 and alpha[:, 102:].min() == 255
    assert (np.asarray(served)[:, 102:, :3] == (30, 160, 60)).all()
    tile = _served(media.display_uris(ds, [i])[0])  # the grid's tile keeps it too
    assert tile.mode == "RGBA" and np.asarray(tile.getchannel("A"))[:, :90].max() == 0
    # The model's copy is composited onto black: the transparent white half is black, not white.
    s = ds.train.images.shape[-1]  # (N, 3, S, S); the 150-px centre crop, left third all transparent
    assert int(ds.train.images[i, :, :, : s // 4].max()) == 0 and int(ds.train.images[i, 1, :, -4:].min()) > 100
    pal = _served(media.large_uri(ds, ids.index("unlabeled/clear_palette.png")))
    assert pal.mode == "RGBA" and pal.size == (40, 30) and np.asarray(pal.getchannel("A"))[:, :20].max() == 0
    assert np.asarray(pal.getchannel("A"))[:, 20:].min() == 255
    turned = media.large_image(ds, ids.index("unlabeled/turned.jpg"))  # a photo: JPEG, as large as it is
    assert turned["image"].startswith("data:image/png;base64,")  # small: exact pixels
    assert (turned["width"], turned["height"]) == (80, 120) and _served(turned["image"]).size == (80, 120)
    jpeg = next(k for k, sample in enumerate(ids) if sample.endswith(".jpg")
                and max(Image.open(root / sample).size) > 256)
    photo = media.large_image(ds, jpeg)
    assert photo["image"].startswith("data:image/jpeg;base64,")
    assert _served(photo["image"]).mode == "RGB" and _served(photo["image"]).size == Image.open(root / ids[jpeg]).size
    assert (photo["width"], photo["height"]) == Image.open(root / ids[jpeg]).size
    opaque = ids.index(next(sample for sample in ids if Image.open(root / sample).mode == "RGBA"
                            and sample != "unlabeled/clear.png"))
    assert _served(media.large_uri(ds, opaque)).mode == "RGB"  # an alpha channel with nothing see-through


def test_a_zip_import_reads_its_sources_back(tmp_path, monkeypatch):
    import zipfile
    folder = write_photos(tmp_path / "src")
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*.*")):
            zf.write(f, f.relative_to(folder).as_posix())
    report, ds = imagefolder.inspect_image_folder(path, cache_dir=tmp_path / "cache")
    assert report.usable and ds.media is not None and ds.image_size == 64
    assert ds.media.source_bytes(0) == (folder / ds.train.ids[0]).read_bytes()
    assert media.source_notes(ds, [0]) == [""]


# --- pretrained backbones ----------------------------------------------------------------------------

def _resnet_state(tmp_path):
    net = build_model(ModelConfig(name="resnet18", num_classes=1000, in_channels=3, weights="none"))
    return {k.removeprefix("net."): v for k, v in net.state_dict().items() if k.startswith("net.")}


def test_weights_files_load_and_a_pickle_is_refused(tmp_path):
    from safetensors.torch import save_file
    state = _resnet_state(tmp_path)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "r18.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "r18.pth")
    for file in ("r18.safetensors", "r18.pth"):
        cfg = ModelConfig(name="resnet18", num_classes=3, in_channels=1, weights=str(tmp_path / file))
        model = build_model(cfg, pretrained=True)
        assert model.pretrained_body
        # gray input: the RGB kernels summed; ImageNet's normalisation, averaged over the channels
        assert torch.allclose(model.net.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
        assert torch.equal(model.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
        assert model.norm.mean.flatten().tolist() == pytest.approx([0.449], abs=1e-3)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"conv1.weight": np.zeros((64, 3, 7, 7))}, f, protocol=2)
    cfg = ModelConfig(name="resnet18", num_classes=3, in_channels=1, weights=str(tmp_path / "evil.pkl"))
    with pytest.raises(MPLStudioError, match="plain pickle is refused"):
        build_model(cfg, pretrained=True)
    save_file({"x": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(MPLStudioError, match="give weights of a resnet18"):
        build_model(dataclasses.replace(cfg, weights=str(tmp_path / "other.safetensors")), pretrained=True)


def test_no_network_for_imagenet_weights_gives_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(MPLStudioError, match="resnet18-f37072fd.pth"):
        build_model(ModelConfig(name="resnet18", num_classes=3, weights="imagenet"), pretrained=True)


def test_a_pretrained_body_learns_slower_than_its_new_head(tmp_path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in _resnet_state(tmp_path).items()}, tmp_path / "r18.safetensors")
    cfg = tiny_config("supervised")
    model = build_model(ModelConfig(name="resnet18", num_classes=2, weights=str(tmp_path / "r18.safetensors")),
                        pretrained=True)
    learner = make_learner(model, 0.05, cfg, 10, 0)
    head = model.head_parameters()
    for group in learner.optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) <= 1
        assert group["lr"] == pytest.approx(0.05 if in_head == {True} or not in_head else 0.005)


def test_a_gray_set_trains_a_resnet_teacher_and_a_mobilenet_student(tiny_dataset, tmp_path):
    cfg = tiny_config("mpl", steps=2, finetune_steps=1, eval_every=2)
    cfg.model = dataclasses.replace(cfg.model, name="resnet18", student="mobilenet_v3_small", weights="none")
    result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)
    assert 0.0 <= result.metrics["test_acc"] <= 1.0
    student, info = load_model(result.checkpoint)
    teacher, _ = load_model(result.checkpoint, which="teacher")
    assert student.arch == "mobilenet_v3_small" and teacher.arch == "resnet18"
    assert info["model"]["in_channels"] == 1
    x = torch.rand(2, 1, 16, 16)
    assert student(x).shape == (2, 2) and teacher(x).shape == (2, 2)
    again = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)  # resumes: nothing to do
    assert again.step == 2
    # at 16 px ResNet-18's layer4 sees 1x1 inputs: where bf16 would apply on this CPU, the run trains in fp32
    assert info["config"]["train"]["amp"] is not bf16_autocast_applies(torch.device("cpu"))


def test_a_strided_convolution_on_one_pixel_keeps_a_cpu_run_in_fp32(monkeypatch):
    from mpl_core.config import RunConfig
    from mpl_core.engine import defaults
    from mpl_core.engine.defaults import _strided_conv_sees_one_pixel, with_sound_bf16
    small = ModelConfig(name="resnet18", weights="none", num_classes=2, image_size=16)
    large = dataclasses.replace(small, image_size=32)
    assert _strided_conv_sees_one_pixel(build_model(small), small)
    assert not _strided_conv_sees_one_pixel(build_model(large), large)
    cnn = ModelConfig(name="cnn", width=4, image_size=28)
    assert not _strided_conv_sees_one_pixel(build_model(cnn), cnn)
    monkeypatch.setattr(defaults, "bf16_autocast_applies", lambda device, enabled=True: enabled)  # a bf16 CPU
    cpu, cfg = torch.device("cpu"), RunConfig()
    assert with_sound_bf16(cfg, small, cpu, ("teacher", "student")).train.amp is False
    assert with_sound_bf16(cfg, large, cpu, ("teacher", "student")).train.amp is True
    mixed = ModelConfig(name="cnn", width=4, student="resnet18", weights="none", num_classes=2, image_size=16)
    assert with_sound_bf16(cfg, mixed, cpu, ("teacher",)).train.amp is True
    assert with_sound_bf16(cfg, mixed, cpu, ("teacher", "student")).train.amp is False  # either role's model counts
    assert with_sound_bf16(cfg, small, torch.device("cuda"), ("student",)).train.amp is True  # a CPU kernel's fault
    assert cfg.train.amp is True  # a copy: the caller's config is unchanged


def test_imagenet_weights_are_read_from_the_data_folder_without_network(tmp_path, monkeypatch):
    """Where a machine has no network, the file torchvision would download can be put in data/weights/."""
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    (tmp_path / "weights").mkdir()
    state = _resnet_state(tmp_path)
    torch.save(state, tmp_path / "weights" / "resnet18-f37072fd.pth")
    model = build_model(ModelConfig(name="resnet18", num_classes=3, in_channels=3, weights="imagenet"), pretrained=True)
    assert model.pretrained_body and torch.equal(model.net.conv1.weight, state["conv1.weight"])


def test_a_copied_file_with_a_new_time_is_still_the_source(photos_ws):
    import os
    ds = photos_ws.dataset()
    file = photos_ws.data_root / "photos" / ds.train.ids[0]
    os.utime(file, ns=(1, 1))  # as `cp` without -p or an unzip leaves it: same bytes, another time
    assert media.source_notes(ds, [0]) == [""]
    assert media.export_image(ds, 0) == file.read_bytes()


def test_zip_members_named_with_dot_slash_read_back(tmp_path):
    import zipfile
    folder = write_photos(tmp_path / "src", per_class=2, unlabeled=3)
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*.*")):
            zf.write(f, "./" + f.relative_to(folder).as_posix())
    report, ds = imagefolder.inspect_image_folder(path, cache_dir=tmp_path / "cache")
    assert report.usable and media.source_notes(ds, [0]) == [""]
    assert ds.media.source_bytes(0) == (folder / ds.train.ids[0]).read_bytes()


def test_a_workspace_refuses_images_that_moved_under_its_decisions(photos_ws):
    import shutil

    ds = photos_ws.dataset()
    photos_ws.store.decide([(ds.train.ids[-1], len(ds.train) - 1)], "manual", [0], "ana")
    (photos_ws.data_root / "photos" / ds.train.ids[-2]).unlink()  # an image before it goes
    shutil.rmtree(photos_ws.root / "cache")  # so the next open imports again
    with pytest.raises(MPLStudioError, match="changed since this workspace imported them"):
        open_workspace("photos", photos_ws.data_root).dataset()


def test_resuming_at_another_training_size_is_refused(tiny_dataset, tmp_path):
    from mpl_core.data.dataset import Dataset, ImageSet
    cfg = tiny_config("supervised", steps=2)
    train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)
    cfg = tiny_config("supervised", steps=4)
    small = torch.nn.functional.interpolate(tiny_dataset.train.images.float(), size=12).to(torch.uint8)
    other = Dataset("stripes", tiny_dataset.class_names, ImageSet(small, tiny_dataset.train.labels,
                                                                  tiny_dataset.train.ids), None, True)
    with pytest.raises(MPLStudioError, match="image_size=16"):
        train(cfg, other, make_split(other, cfg.data), out_dir=tmp_path)


def test_models_that_cannot_take_the_size_or_the_role_say_so(tiny_dataset, tmp_path):
    cfg = tiny_config("supervised", steps=1)
    cfg.model = dataclasses.replace(cfg.model, name="convnext_tiny", weights="none")
    with pytest.raises(MPLStudioError, match="at least 32 px"):
        train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data))
    cfg.model = dataclasses.replace(cfg.model, name="cnn", student="mobilenet_v3_small")
    result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)
    assert load_model(result.checkpoint)[1]["model"]["student"] == ""  # no teacher: the model named is trained
