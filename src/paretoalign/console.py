"""What the terminal shows: plain-text tables (no extra dependency), and third-party noise kept quiet."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings


def _cell(c) -> str:
    if isinstance(c, float):
        return f"{c:.3f}" if math.isfinite(c) else "n/a"  # never "nan" where a reader expects a score
    return str(c)


def table(headers: list[str], rows: list[list]) -> str:
    """A fixed-width table; floats print with 3 decimals, a NaN/inf float as ``n/a``."""
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join([line, sep, *body])


def print_summary(summary: dict, output_dir: str) -> None:
    """The final per-objective table of a training run."""
    names = summary.get("objectives", [])
    n = summary.get("window", 1)
    rows = []
    for name in names:
        s = summary.get(name)
        if s:
            rows.append([name, s["first"], s["last"], s["last"] - s["first"], s.get("weight", float("nan"))])
    print()
    print(f"{summary['method']}: {summary['steps']} steps in {summary['seconds']:.1f} s  ->  {output_dir}")
    if "loss" in summary:
        print(f"loss: first {n} steps {summary['loss']['first']:.4f}, last {n} steps {summary['loss']['last']:.4f}"
              f" ({summary.get('examples', '?')} training examples)")
    if rows:
        print(table(["objective", f"first {n} steps", f"last {n} steps", "change", "mean weight"], rows))
    print("(training-batch values; evaluate on held-out prompts for a fair comparison: paretoalign evaluate "
          f"{output_dir})")


# ---------------------------------------------------------------------------------------------
# third-party noise: quiet at our call sites unless --verbose

VERBOSE_ENV = "PARETOALIGN_VERBOSE"  # an environment variable, so accelerate's worker processes inherit it

# Warnings we have read and know to be harmless for what paretoalign does: (category, message regex).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # PEFT reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model (transformers 5)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


def verbose() -> bool:
    """True when ``--verbose`` (or ``PARETOALIGN_VERBOSE=1``) asked for every third-party message."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


# DeepSpeed logs this when it is imported on a machine without a GPU, and accelerate's unwrap_model imports it
# wherever it is installed (it is in the test extra): a line about a library the run does not use.
DEEPSPEED_CPU_NOTICE = "Setting accelerator to CPU"


class _DropNotice(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_deepspeed_cpu_notice() -> None:
    """Drop :data:`DEEPSPEED_CPU_NOTICE` from DeepSpeed's logger for the rest of the process (the command line's;
    not with ``--verbose``).  DeepSpeed sets its logger's level and handler when imported, but keeps the logger
    object, so a filter put on it first stays."""
    if verbose():
        return
    ds = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropNotice) for f in ds.filters):
        ds.addFilter(_DropNotice(DEEPSPEED_CPU_NOTICE))


@contextlib.contextmanager
def quiet_third_party():
    """Around our calls into transformers/PEFT/huggingface_hub: the :data:`KNOWN_WARNINGS` are dropped and
    their per-file progress bars (weight loading, shard writing) are off; everything comes back with
    ``--verbose``.  Scoped to the call (warning filters and bar switches are restored), so code around
    ours, a user's notebook included, keeps its own settings."""
    if verbose():
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hub_off, hf_on = are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        disable_progress_bars()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if not hub_off:
                enable_progress_bars()
            if hf_on:
                hf_logging.enable_progress_bar()
