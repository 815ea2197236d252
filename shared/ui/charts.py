"""Small inline SVG charts (no script, no library from the internet): the events
that moved an answer, a histogram of a cohort's probabilities, losses per round.
Each chart carries a <title> and an aria-label, and the page shows the numbers
in a table beside it, so nothing is only a picture."""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

RAISE, LOWER, INK, GRID = "#b3261e", "#1b6e3a", "#1f2933", "#c9ced6"
SERIES = ("#1d4e89", "#b35c00", "#6a3d9a", "#1b6e3a", "#b3261e")


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    return Markup(f'<svg role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
                  f'width="100%" style="max-width:{width}px" xmlns="http://www.w3.org/2000/svg">'
                  f"<title>{escape(label)}</title>{''.join(body)}</svg>")


def influence_chart(influences, label: str = "Events that moved the probability") -> Markup:
    """Diverging bars: change in probability when each event group is left out."""
    rows = list(influences)
    width, left, row_h = 640, 260, 26
    height = 30 + row_h * max(1, len(rows))
    mid = left + (width - left - 20) / 2
    half = (width - left - 30) / 2
    scale = max([abs(i.delta) for i in rows] + [0.05])
    body = [f'<line x1="{mid}" y1="10" x2="{mid}" y2="{height - 10}" stroke="{INK}"/>']
    for k, inf in enumerate(rows):
        y = 20 + k * row_h
        length = abs(inf.delta) / scale * half
        x = mid if inf.delta >= 0 else mid - length
        colour = RAISE if inf.delta > 0 else LOWER
        name = inf.description if len(inf.description) < 38 else inf.description[:36] + "..."
        body += [f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" font-size="13" '
                 f'fill="{INK}">{escape(name)}</text>',
                 f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{max(length, 1):.1f}" '
                 f'height="{row_h - 8}" fill="{colour}"><title>{escape(inf.words())}</title>'
                 "</rect>",
                 f'<text x="{mid + (8 if inf.delta < 0 else -8)}" y="{y + 14}" font-size="12" '
                 f'text-anchor="{"start" if inf.delta < 0 else "end"}" fill="{INK}">'
                 f"{inf.delta:+.2f}</text>"]
    return _svg(width, height, label, body)


def histogram(values: list[float], bins: int = 10,
              label: str = "Histogram of predicted probabilities") -> Markup:
    counts = [0] * bins
    for v in values:
        if v is not None and not math.isnan(v):
            counts[min(int(v * bins), bins - 1)] += 1
    width, height, left, bottom = 520, 220, 40, 30
    top = max(counts + [1])
    bar_w = (width - left - 10) / bins
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
            f'y2="{height - bottom}" stroke="{INK}"/>']
    for k, count in enumerate(counts):
        h = count / top * (height - bottom - 20)
        x = left + k * bar_w
        body += [f'<rect class="bar" x="{x + 2:.1f}" y="{height - bottom - h:.1f}" '
                 f'width="{bar_w - 4:.1f}" height="{h:.1f}" fill="{SERIES[0]}">'
                 f"<title>{k / bins:.1f}-{(k + 1) / bins:.1f}: {count}</title></rect>"]
        if count:
            body.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom - h - 4:.1f}" '
                        f'text-anchor="middle" font-size="11" fill="{INK}">{count}</text>')
    for k in range(0, bins + 1, 2):
        body.append(f'<text x="{left + k * bar_w:.1f}" y="{height - 10}" font-size="11" '
                    f'text-anchor="middle" fill="{INK}">{k / bins:.1f}</text>')
    return _svg(width, height, label, body)


def line_chart(series: dict[str, list[tuple[float, float]]],
               label: str = "Losses per round") -> Markup:
    points = [p for values in series.values() for p in values]
    if not points:
        return Markup("")
    width, height, left, bottom = 560, 240, 56, 30
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> str:
        px = left + (x - x0) / (x1 - x0) * (width - left - 20)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - bottom - 20)
        return f"{px:.1f},{py:.1f}"

    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
            f'y2="{height - bottom}" stroke="{INK}"/>',
            f'<text x="{left - 6}" y="24" text-anchor="end" font-size="11">{y1:.3g}</text>',
            f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">'
            f"{y0:.3g}</text>",
            f'<text x="{(width + left) / 2}" y="{height - 8}" text-anchor="middle" '
            'font-size="11">round</text>']
    for k, (name, values) in enumerate(series.items()):
        colour = SERIES[k % len(SERIES)]
        path = " ".join(at(x, y) for x, y in values)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                    f'stroke-width="2"><title>{escape(name)}</title></polyline>')
        body += [f'<circle cx="{at(x, y).split(",")[0]}" cy="{at(x, y).split(",")[1]}" r="3" '
                 f'fill="{colour}"><title>{escape(name)} round {x:g}: {y:.3f}</title></circle>'
                 for x, y in values]
        body.append(f'<text x="{width - 12}" y="{20 + 14 * k}" text-anchor="end" '
                    f'font-size="12" fill="{colour}">{escape(name)}</text>')
    return _svg(width, height, label, body)
