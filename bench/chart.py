"""An SVG bar chart of the benchmark's ratios, in plain Python (no plotting library).

`ratio_chart([(case, {tool: ratio})], title)` draws one group of horizontal bars per case on a
log2 axis, with a line at 1 (as fast as spack-mirrord): bars to the right mean the other tool
took longer.
"""

import math
from xml.sax.saxutils import escape

COLOURS = {"skopeo": "#d95f02", "curl": "#7570b3", "floor": "#1b9e77"}
LABELS = {
    "skopeo": "skopeo sync --dest dir",
    "curl": "curl -Z, the product's requests",
    "floor": "8 keep-alive clients (floor)",
}


def ratio_chart(groups, title):
    bar_h, gap, left, right, top = 18, 14, 130, 60, 60
    width = 760
    rows = sum(max(len(r), 1) for _, r in groups)
    height = top + rows * bar_h + len(groups) * gap + 70
    values = [v for _, r in groups for v in r.values() if v > 0] or [1.0]
    lo = math.floor(math.log2(min(min(values), 1.0)))
    hi = math.ceil(math.log2(max(max(values), 1.0)))
    if hi == lo:
        hi += 1
    plot_w = width - left - right

    def x(v):
        return left + (math.log2(v) - lo) / (hi - lo) * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    axis_y = height - 50
    for e in range(lo, hi + 1):
        v = 2.0**e
        gx = x(v)
        label = f"{v:g}" if v >= 1 else f"1/{2 ** -e}"
        out.append(f'<line x1="{gx:.1f}" y1="{top - 10}" x2="{gx:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        out.append(f'<text x="{gx:.1f}" y="{axis_y + 15}" text-anchor="middle">{label}</text>')
    one = x(1.0)
    out.append(f'<line x1="{one:.1f}" y1="{top - 10}" x2="{one:.1f}" y2="{axis_y}" stroke="black" stroke-width="1.5"/>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{axis_y + 32}" text-anchor="middle">'
        "time ÷ spack-mirrord sync --now (log scale; right of 1: spack-mirrord is faster)</text>"
    )
    y = top
    for case, ratios in groups:
        n = max(len(ratios), 1)
        out.append(
            f'<text x="{left - 10}" y="{y + n * bar_h / 2 + 4:.1f}" text-anchor="end" font-weight="bold">{escape(case)}</text>'
        )
        for tool, v in ratios.items():
            x0, x1 = sorted((one, x(v)))
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 1):.1f}" height="{bar_h - 4}" '
                f'fill="{COLOURS.get(tool, "#666")}"><title>{escape(LABELS.get(tool, tool))}: {v:.2f}</title></rect>'
            )
            out.append(f'<text x="{x1 + 4:.1f}" y="{y + bar_h - 5}">{v:.2f}</text>')
            y += bar_h
        y += (n - len(ratios)) * bar_h + gap
    lx = 40
    for tool, label in LABELS.items():
        out.append(f'<rect x="{lx}" y="34" width="12" height="12" fill="{COLOURS[tool]}"/>')
        out.append(f'<text x="{lx + 16}" y="44">{escape(label)}</text>')
        lx += 230
    out.append("</svg>")
    return "\n".join(out) + "\n"
