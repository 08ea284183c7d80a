"""Where a run's per-step logs go besides its history.jsonl: TensorBoard or Weights & Biases.

The names are TRL's where TRL has one (loss, learning_rate, grad_norm, rewards/chosen,
rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected), so a
dashboard built for TRL's DPOTrainer reads a clipaln run; the rest keep clipaln's (loss/kl, margin/h).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

REPORTERS = ("tensorboard", "wandb")
#: Per-step columns that are bookkeeping, not metrics.
NOT_METRICS = ("step", "elapsed_s")
PREFIX = "train/"  # history.jsonl keeps the bare names


#: The package each backend needs, and how to install it.
NEEDS = {
    "tensorboard": ("tensorboard", "pip install 'clipaln[track]'"),
    "wandb": ("wandb", "pip install wandb"),
}


def check(report_to: Sequence[str]) -> None:
    """Refuse, before any work, a backend that is unknown or whose package is not installed."""
    import importlib.util

    unknown = [r for r in report_to if r not in REPORTERS]
    if unknown:
        raise ValueError(f"unknown --report-to {', '.join(unknown)}: use {', '.join(REPORTERS)}")
    for r in report_to:
        package, install = NEEDS[r]
        if importlib.util.find_spec(package) is None:
            raise RuntimeError(f"--report-to {r} needs the {package} package: {install}")


class Reporter:
    """Sends each step's logs to every backend asked for; `close()` flushes them."""

    def __init__(self, report_to: Sequence[str], logdir: Path, config: dict, name: str, resume_step: int | None = None):
        """resume_step: the step a resumed run starts from; TensorBoard drops what the interrupted run
        logged from there on, so that a step is never logged twice."""
        check(report_to)
        self.sinks: list[tuple[Callable[[int, dict], None], Callable[[], None]]] = []
        if "tensorboard" in report_to:
            self.sinks.append(_tensorboard(Path(logdir), config, resume_step))
        if "wandb" in report_to:
            self.sinks.append(_wandb(config, name))

    def __call__(self, step: int, row: dict) -> None:
        # under "train/", as TRL's trainers (through transformers' Trainer) log to TensorBoard and W&B;
        # validation metrics are already "eval/...", as theirs are
        metrics = {k if k.startswith("eval/") else f"{PREFIX}{k}": v for k, v in row.items() if k not in NOT_METRICS}
        for log, _ in self.sinks:
            log(step, metrics)

    def close(self) -> None:
        for _, close in self.sinks:
            close()


def _tensorboard(logdir: Path, config: dict, resume_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError(
            "--report-to tensorboard needs the tensorboard package: pip install 'clipaln[track]'"
        ) from None
    writer = SummaryWriter(log_dir=str(logdir), purge_step=resume_step)
    writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def log(step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            writer.add_scalar(k, v, step)

    return log, writer.close


def _wandb(config: dict, name: str):
    try:
        import wandb
    except ImportError:
        raise RuntimeError("--report-to wandb needs the wandb package: pip install wandb") from None
    run = wandb.init(config=config, name=name, reinit=True)
    return (lambda step, metrics: run.log(metrics, step=step)), run.finish
