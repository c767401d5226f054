"""tqdm progress bars for the CLI: a training progress hook, and one for importing images."""
from __future__ import annotations

from tqdm import tqdm


class TqdmProgress:
    """Callable progress hook: one bar per phase, with the latest losses and accuracy."""

    KEYS = ("t_loss", "s_loss", "loss", "finetune_loss", "h", "val_acc", "teacher_val_acc")

    def __init__(self, disable: bool = False):
        self.disable = disable
        self.bar: tqdm | None = None
        self.phase = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def __call__(self, progress) -> None:
        if progress.phase == "done":
            return
        if progress.phase != self.phase:
            if self.bar is not None:
                self.bar.close()
            self.phase = progress.phase
            self.bar = tqdm(total=progress.total, desc=progress.phase, disable=self.disable, unit="step")
            self.bar.update(progress.step)
        else:
            self.bar.update(progress.step - self.bar.n)
        shown = {k: f"{progress.metrics[k]:.3f}" for k in self.KEYS if k in progress.metrics}
        shown["img/s"] = f"{progress.images_per_s:.0f}"
        self.bar.set_postfix(shown, refresh=False)


class ImportProgress:
    """on_progress(done, total) of an image import, as a tqdm bar (CLI only)."""

    def __init__(self, disable: bool = False):
        self.disable, self.bar = disable, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc="importing images", unit="img", disable=self.disable)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
