"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): train MPL on the tiny
stripes data three times (straight through; stopped at step 10 then resumed; with separate view
batches) and save every rank's
final weights and BatchNorm statistics for the test to compare.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import stripes_dataset, tiny_config  # noqa: E402
from mpl_core.data.splits import make_split  # noqa: E402
from mpl_core.engine import distributed  # noqa: E402
from mpl_core.engine.train import TrainControl, train  # noqa: E402


def final_state(result) -> dict[str, torch.Tensor]:
    out = {}
    for name, model in result.models.items():
        for k, v in model.state_dict().items():
            out[f"{name}.{k}"] = v.detach().cpu().contiguous().clone()
    return out


def main() -> None:
    out = Path(sys.argv[1])
    ctx = distributed.init("cpu")
    assert ctx is not None and ctx.world_size == 2
    torch.set_num_threads(1)
    data = stripes_dataset()
    cfg = tiny_config("mpl", steps=20, checkpoint_every=10, eval_every=10, finetune_steps=10)
    cfg.algorithm.view_batches = "joint"  # DDP's own gradient averaging first (a CPU's default is separate)
    split = make_split(data, cfg.data)

    def out_dir(name):  # only rank 0 is given a folder: it alone writes
        return out / name if ctx.is_main else None

    straight = train(cfg, data, split, out_dir=out_dir("straight"))
    save_file(final_state(straight), str(out / f"straight.rank{ctx.rank}.safetensors"))

    # Rank 1 alone asks to stop, before the first step; the ranks agree at the step-10 log, stop
    # together, and rank 0 saves a checkpoint with both ranks' generators.
    control = TrainControl()
    if ctx.rank == 1:
        control.stop.set()
    stopped = train(cfg, data, split, out_dir=out_dir("resumed"), control=control)
    assert stopped.stopped and stopped.step == 10, (stopped.stopped, stopped.step)
    resumed = train(cfg, data, split, out_dir=out_dir("resumed"))
    save_file(final_state(resumed), str(out / f"resumed.rank{ctx.rank}.safetensors"))

    # Separate view batches call the teacher twice before its backward: gradients averaged by hand.
    cfg.algorithm.view_batches = "separate"
    separate = train(cfg, data, split, out_dir=out_dir("separate"))
    save_file(final_state(separate), str(out / f"separate.rank{ctx.rank}.safetensors"))
    distributed.shutdown()


if __name__ == "__main__":
    main()
