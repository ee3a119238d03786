"""Plain-text tables for the terminal (no extra dependency)."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    """A fixed-width table; floats print with 3 decimals."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
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
            rows.append([name, s["first"], s["last"], s["last"] - s["first"], s["weight"]])
    print()
    print(f"{summary['method']}: {summary['steps']} steps in {summary['seconds']:.1f} s  ->  {output_dir}")
    if "loss" in summary:
        print(f"loss: first {n} steps {summary['loss']['first']:.4f}, last {n} steps {summary['loss']['last']:.4f}"
              f" ({summary.get('examples', '?')} training examples)")
    if rows:
        print(table(["objective", f"first {n} steps", f"last {n} steps", "change", "mean weight"], rows))
    print("(training-batch values; evaluate on held-out prompts for a fair comparison: paretoalign evaluate "
          f"{output_dir})")
