"""Ratio table and PNG chart from the shared benchmark kit's JSON results.

    python bench/chart.py RESULTS.json [MORE.json ...] [-o chart.png]

Reads the files `../shared/bench/run --out FILE.json` writes (network
scenarios, micro benchmarks, or both), prints each scenario's ratio to
uvloop for every loop with the geometric means, and draws the same as
grouped horizontal bars into a PNG (matplotlib; default: next to the first
input, with the suffix .png). Every number comes from the kit's own
summary: median per-repetition ratio to uvloop, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

# The order loops are shown in (others follow, by name).
LOOP_ORDER = ["asyncio", "uvloop", "rloop", "uvrs", "limit"]
COLOURS = {"asyncio": "#9e9e9e", "uvloop": "#4c72b0", "rloop": "#dd8452",
           "uvrs": "#2ca02c", "limit": "#c0c0c0"}


def ratios(path: str) -> list[tuple[str, dict[str, float]]]:
    """[(row label, {loop: ratio to uvloop})] of one results file."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rows = []
    for key, prefix in (("summary", ""), ("micro_summary", "micro ")):
        for name, per_loop in (data.get(key) or {}).items():
            rows.append((prefix + name, {
                loop: st["ratio_vs_uvloop"] for loop, st in per_loop.items()
                if isinstance(st, dict) and st.get("ratio_vs_uvloop")}))
    return rows


def ordered_loops(rows) -> list[str]:
    seen = {loop for _, r in rows for loop in r}
    return [lp for lp in LOOP_ORDER if lp in seen] + sorted(seen - set(LOOP_ORDER))


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def with_geomeans(rows, loops):
    """rows, plus a geometric-mean row per kind (network, micro)."""
    out = list(rows)
    for kind, pick in (("network", lambda n: not n.startswith("micro ")),
                       ("micro", lambda n: n.startswith("micro "))):
        chosen = [r for n, r in rows if pick(n)]
        if chosen:
            means = {lp: geomean([r[lp] for r in chosen if lp in r]) for lp in loops}
            counts = {lp: sum(lp in r for r in chosen) for lp in loops}
            out.append((f"geomean {kind}", {lp: m for lp, m in means.items() if m},
                        counts))
    return out


def print_table(rows, loops) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'ratio to uvloop':<{width}}  " + "  ".join(f"{lp:>8}" for lp in loops))
    for row in rows:
        name, r = row[0], row[1]
        counts = row[2] if len(row) > 2 else None
        cells = []
        for lp in loops:
            if lp not in r:
                cells.append(f"{'n/a':>8}")
            elif counts and counts[lp] != max(counts.values()):
                cells.append(f"{r[lp]:>6.2f}x¹")
            else:
                cells.append(f"{r[lp]:>7.2f}x")
        print(f"{name:<{width}}  " + "  ".join(cells))
    if any(len(row) > 2 and len(set(row[2].values())) > 1 for row in rows):
        print("¹ over fewer scenarios: that loop has no result for some of them")


def draw(rows, loops, out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows]
    height = 0.8 / len(loops)
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    for i, lp in enumerate(loops):
        ys = [len(rows) - 1 - k + (len(loops) / 2 - i - 0.5) * height for k in range(len(rows))]
        xs = [r[1].get(lp, 0) for r in rows]
        ax.barh(ys, xs, height=height, label=lp, color=COLOURS.get(lp))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(reversed(names)))
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("throughput relative to uvloop (higher is better)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="JSON written by ../shared/bench/run --out")
    ap.add_argument("-o", "--output", help="PNG to write (default: FIRST.png)")
    args = ap.parse_args(argv)
    rows = [row for path in args.results for row in ratios(path)]
    if not rows:
        print("chart.py: no summary in those files", file=sys.stderr)
        return 1
    loops = ordered_loops(rows)
    rows = with_geomeans(rows, loops)
    print_table(rows, loops)
    out = args.output or os.path.splitext(args.results[0])[0] + ".png"
    try:
        draw(rows, loops, out, "uvrs benchmarks: " + ", ".join(
            os.path.basename(p) for p in args.results))
    except ImportError:
        print("chart.py: matplotlib is not installed (pip install matplotlib): no PNG",
              file=sys.stderr)
        return 1
    print(f"chart: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
