"""The one training loop every `train_*.py` runs; each script only says what a batch's loss is.

What it owns, so no script repeats it: the deadline (`--minutes`) and an optional step limit,
gradient clipping, linear learning-rate warm-up, the EMA copies (diffusers' `EMAModel` warm-up:
decay = min(ema, (1 + step) / (10 + step))), the `losses.csv` rows and the progress lines, and a
checkpoint every few minutes and at the end, so a stopped run resumes where it was (common.Checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch

from common import Deadline, LossLog

SAVE_EVERY_S = 180  # a run handed back mid-way loses at most three minutes


def train(
    *,
    run: str,
    minutes: float,
    opt: torch.optim.Optimizer,
    params: Iterable[torch.nn.Parameter],
    batch_loss: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    save: Callable[[int], None],
    step: int = 0,
    extras: Sequence[str] = (),
    base_lrs: Sequence[float] | None = None,
    warmup: int = 0,
    warm_from: int = 0,
    ema: Sequence[tuple[torch.nn.Module, torch.nn.Module]] = (),
    ema_decay: float = 0.999,
    max_steps: int | None = None,
) -> int:
    """Runs optimiser steps from `step` until `minutes` pass (or `max_steps`); returns the last step.

    - `batch_loss(step)` draws a batch and returns its loss and named extra figures (logged, in
      the order of `extras`, after the loss).
    - `save(step)` writes the checkpoint; it is called every SAVE_EVERY_S seconds and at the end.
    - `base_lrs`: each param group's learning rate after warm-up; with `warmup`, the rate rises
      linearly over `warmup` steps counted from `warm_from` (a run whose optimiser was reset
      warms up again). None leaves the rates alone.
    - `ema`: (trained, ema copy) pairs updated after every step.
    """
    params = list(params)
    log = LossLog(run, ["step", "loss", *extras, "seconds"])
    deadline = Deadline(minutes)
    t0 = last_save = time.time()
    running = None
    while not deadline.passed() and not (max_steps and step >= max_steps):
        loss, figures = batch_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if base_lrs is not None:
            warm = min(1.0, (step + 1 - warm_from) / warmup) if warmup else 1.0
            for pg, lr in zip(opt.param_groups, base_lrs, strict=True):
                pg["lr"] = lr * warm
        opt.step()
        step += 1
        if ema:
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for trained, copy in ema:
                    for pe, p in zip(copy.parameters(), trained.parameters()):
                        pe.lerp_(p, 1 - decay)
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 10 == 0:
            log.row(step, f"{value:.5f}", *(f"{figures[k]:.5f}" for k in extras), f"{time.time() - t0:.0f}")
        if step % 50 == 0:
            shown = "".join(f" {k} {figures[k]:.4f}" for k in extras)
            print(f"step {step} loss {running:.4f}{shown} ({(time.time() - t0) / 60:.1f} min)", flush=True)
        if time.time() - last_save > SAVE_EVERY_S:
            save(step)
            last_save = time.time()
    save(step)
    return step
