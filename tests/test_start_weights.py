"""Start weights checked before Start (engine/backbones.weights_status, service/start_weights.py):
cached, downloadable or unreachable ImageNet weights, a weights file there or not, the default's
swap to from scratch, the refusal at the click and the download's status line. Nothing downloads."""
import dataclasses
import socket
import time
from types import SimpleNamespace

import pytest
import torch
from test_own_images import write_photos

from conftest import tiny_run_config
from mpl_core.config import FROM_SCRATCH, DataConfig
from mpl_core.engine.backbones import HostProbe, imagenet_file, imagenet_state, weights_dir, weights_status
from mpl_core.errors import MPLStudioError
from mpl_core.service import work
from mpl_core.service.start_weights import default_start, start_weights
from mpl_core.service.studio import Studio
from mpl_core.workspace.workspace import create_workspace

R18 = "resnet18-f37072fd.pth"  # the file torchvision downloads for resnet18


def offline(url: str) -> bool:
    return False


def online(url: str) -> bool:
    return True


def never(url: str) -> bool:
    raise AssertionError("probed the network although nothing needed it")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))  # weights_dir() is tmp_path/weights
    return tmp_path


def put_resnet18_weights(data_root) -> dict:
    import torchvision
    state = torchvision.models.resnet18(weights=None).state_dict()
    (data_root / "weights").mkdir(exist_ok=True)
    torch.save(state, data_root / "weights" / R18)
    return state


def test_imagenet_weights_are_cached_downloadable_or_unreachable(data_root):
    assert imagenet_file("resnet18") == weights_dir() / R18 == data_root / "weights" / R18
    down = weights_status("resnet18", "imagenet", online)
    assert down.state == "downloadable" and down.ready and "45 MB" in down.message
    gone = weights_status("resnet18", "imagenet", offline)
    assert gone.state == "unreachable" and not gone.ready
    # what to do, in one line: the file, its folder, and the option by the name the pages give it
    assert R18 in gone.message and str(data_root / "weights") in gone.message and FROM_SCRATCH in gone.message
    assert "\n" not in gone.message and "'none'" not in gone.message
    put_resnet18_weights(data_root)
    cached = weights_status("resnet18", "imagenet", never)
    assert cached.state == "cached" and cached.ready and cached.file == data_root / "weights" / R18


def test_from_scratch_and_weights_files_need_no_probe(data_root):
    assert weights_status("resnet18", "none", never).state == "scratch"
    assert weights_status("cnn", "imagenet", never).message == f"cnn starts {FROM_SCRATCH}"  # no pretrained cnn
    path = data_root / "mine.safetensors"
    missing = weights_status("resnet18", str(path), never)
    assert missing.state == "missing" and not missing.ready and str(path) in missing.message
    path.write_bytes(b"x")
    assert weights_status("resnet18", str(path), never).state == "file"


def test_the_probe_connects_once_a_minute_and_through_a_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    probe = HostProbe(timeout_s=1.5, ttl_s=60)
    assert probe(f"http://127.0.0.1:{port}/models/x.pth")
    server.close()
    assert probe(f"http://127.0.0.1:{port}/models/x.pth")  # the answer kept: no second connect
    assert not HostProbe(ttl_s=0)(f"http://127.0.0.1:{port}/models/x.pth")  # asked again: refused now
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        t0 = time.monotonic()
        assert HostProbe()("https://download.pytorch.org/models/resnet18-f37072fd.pth")  # the proxy answers
        assert time.monotonic() - t0 < 1.5


def test_the_download_says_so_first_and_reads_the_cached_file_after(data_root, monkeypatch):
    said, fetched = [], []

    def download(url, model_dir, **kwargs):  # stands in for torch.hub's download: writes the file it would
        fetched.append(url)
        return put_resnet18_weights(data_root)

    with monkeypatch.context() as patch:
        patch.setattr("torchvision.models._api.load_state_dict_from_url", download)
        state = imagenet_state("resnet18", on_download=said.append)
    assert fetched and said == [f"downloading resnet18's ImageNet weights (45 MB) into {data_root / 'weights'}/..."]
    again = imagenet_state("resnet18", on_download=said.append)  # the real loader, from the cached file
    assert len(said) == 1 and torch.equal(again["conv1.weight"], state["conv1.weight"])


@pytest.fixture
def photos(data_root, monkeypatch):
    """An own-images workspace at 64 px, where the default model (auto) is a ResNet-18 from ImageNet weights."""
    monkeypatch.setattr("mpl_core.workspace.workspace.device_kind", lambda: "cpu")
    write_photos(data_root / "photos", per_class=4, unlabeled=9)
    return create_workspace("photos", DataConfig(dataset="photos", val_fraction=0.25), data_root)


def test_the_default_starts_from_scratch_where_imagenet_weights_cannot_be_had(photos, data_root):
    statuses = start_weights(photos, online)
    assert [(s.arch, s.state) for s in statuses] == [("resnet18", "downloadable")]  # teacher and student alike
    assert default_start(photos, online).weights == "imagenet" and not default_start(photos, online).note
    swapped = default_start(photos, offline)
    assert swapped.weights == "none"
    assert swapped.note.startswith(f"Training starts {FROM_SCRATCH}") and R18 in swapped.note
    assert str(data_root / "weights") in swapped.note
    assert "From scratch the default model (auto) is the small CNN, not resnet18" in swapped.note
    assert start_weights(photos, offline, weights="none")[0].arch == "cnn"  # what that start then trains
    put_resnet18_weights(data_root)
    assert default_start(photos, offline).weights == "imagenet"  # cached: no network needed
    mixed = start_weights(photos, offline, student="mobilenet_v3_small")
    assert [(s.arch, s.state) for s in mixed] == [("resnet18", "cached"), ("mobilenet_v3_small", "unreachable")]
    assert [s.arch for s in start_weights(photos, offline, student="mobilenet_v3_small", algorithm="supervised")] \
        == ["resnet18"]  # one model without a teacher


def test_a_start_that_would_fail_for_its_weights_is_refused_at_the_click(photos, data_root):
    studio = Studio(data_root)
    studio.weights_probe = offline
    cfg = tiny_run_config("mpl")
    cfg.model = dataclasses.replace(cfg.model, name="auto", weights="imagenet")
    with pytest.raises(MPLStudioError, match=R18):
        studio.start("photos", "train", cfg=cfg)
    assert studio.job("photos") is None and studio.runs("photos") == []  # no job, no failed run


def test_a_fresh_run_downloads_its_weights_with_a_status_line_and_a_resumed_one_does_not(photos, data_root,
                                                                                        monkeypatch):
    said = []
    monkeypatch.setattr(work, "imagenet_state", lambda arch, on_download: on_download(f"downloading {arch}"))
    job = SimpleNamespace(ws=photos, say=said.append)
    cfg = tiny_run_config("mpl")
    cfg.model = dataclasses.replace(cfg.model, name="auto", student="mobilenet_v3_small", weights="imagenet")
    work._fetch_start_weights(job, cfg, 64, run_id=1)
    assert said == ["downloading resnet18", "running", "downloading mobilenet_v3_small", "running"]
    said.clear()
    cfg.model = dataclasses.replace(cfg.model, student="", weights="none")
    work._fetch_start_weights(job, cfg, 64, run_id=1)
    cfg.model = dataclasses.replace(cfg.model, weights="imagenet")
    monkeypatch.setattr(work, "latest_checkpoint", lambda folder: folder / "ckpt.safetensors")
    work._fetch_start_weights(job, cfg, 64, run_id=1)
    assert said == []  # from scratch, and a resumed run: nothing to download
