"""Reports of RLHF runs: metrics table, reward/metric curves and image grids with PDM overlays, as report.md and a
self-contained report.html (images embedded), from evaluation JSON and TensorBoard logs (the demo and the hacking
benchmark write theirs with it)."""
import base64
import html
import json
import os

import cv2
import numpy as np

from finpercep_basicsr.metrics.directions import lower_is_better

# training reward (each run's own reward), then held-out validation metrics, then fidelity losses
CURVE_TAGS = ('reward', 'psnr', 'ssim', 'pdm_rate', 'l_pix', 'l_ref')
RELATIVE_TIE = 1e-3  # differences below this fraction are reported as equal (noise, rounding)
MIN_TILE = 192  # grid tiles are enlarged (nearest) to at least this width so details are visible


def tb_scalars(tb_dir):
    """{tag: (steps, values)} of every scalar in a TensorBoard run folder ({} when absent)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    if not os.path.isdir(tb_dir):
        return {}
    acc = EventAccumulator(tb_dir, size_guidance={'scalars': 0})
    acc.Reload()
    return {tag: ([e.step for e in acc.Scalars(tag)], [e.value for e in acc.Scalars(tag)])
            for tag in acc.Tags()['scalars']}


def curves_png(runs, path, max_panels=6):
    """Plot the scalar tags the runs share (rewards first, then validation metrics) into ``path``.

    Args:
        runs (dict): {label: {tag: (steps, values)}}.
        path (str): PNG to write.

    Returns:
        list[str]: The plotted tags.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    common = set.intersection(*(set(s) for s in runs.values())) if runs else set()
    tags = []
    for wanted in CURVE_TAGS:  # first tag of the runs matching each wanted suffix, in this order
        match = sorted((t for t in common if t == wanted or t.endswith('/' + wanted)),
                       key=lambda t: (t != wanted, t.startswith('metrics/'), t))  # training tag first
        if match and match[0] not in tags:
            tags.append(match[0])
    tags = tags[:max_panels]
    if not tags:
        return []
    cols = min(3, len(tags))
    rows = (len(tags) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for label, scalars in runs.items():
            steps, values = scalars[tag]
            ax.plot(steps, values, label=label, linewidth=1.4)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis('off')
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return tags


def lr_preview(lq, size):
    """Nearest-neighbour enlargement of an LR image to ``size`` (what the network was given)."""
    reps = max(1, size // lq.shape[0])
    return np.kron(lq, np.ones((reps, reps, 1), np.float32))


def _label(img, text):
    """8-bit BGR image with ``text`` on a dark band above it."""
    band = np.full((22, img.shape[1], 3), 30, np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([band, img], axis=0)


def pdm_columns(titles, images, net=None):
    """Grid columns (title, 8-bit BGR image, its PDM overlay from ``net`` or None) of same-size RGB images."""
    from finpercep_basicsr.evaluation.score import overlay
    pdms = [None] * len(images)
    if net is not None:
        import torch
        with torch.no_grad():
            batch = torch.from_numpy(np.stack([i.transpose(2, 0, 1) for i in images])).float()
            pdms = net(batch)['pdm'][:, 0].numpy()
    columns = []
    for title, img, pdm in zip(titles, images, pdms):
        strip = overlay(img, pdm if pdm is not None else np.zeros(img.shape[:2], np.float32))
        w = img.shape[1]  # overlay gives image | blend side by side
        columns.append((title, strip[:, :w], strip[:, w:] if pdm is not None else None))
    return columns


def image_grid(columns, path, gap=4):
    """Write a grid: one column per (title, top BGR image, bottom BGR image or None).

    Small images are enlarged by an integer factor (nearest neighbour) to ``MIN_TILE`` pixels wide.
    """
    factor = max(1, -(-MIN_TILE // max(top.shape[1] for _, top, _ in columns)))
    enlarge = lambda img: None if img is None else np.kron(img, np.ones((factor, factor, 1), np.uint8))  # noqa: E731
    columns = [(title, enlarge(top), enlarge(bottom)) for title, top, bottom in columns]
    h = max(top.shape[0] for _, top, _ in columns)
    tiles = []
    for title, top, bottom in columns:
        parts = [_label(top, title)]
        if bottom is not None:
            parts.append(np.full((gap, top.shape[1], 3), 255, np.uint8))
            parts.append(bottom)
        tile = np.concatenate(parts, axis=0)
        tiles.append(np.pad(tile, ((0, 22 + 2 * h + gap - tile.shape[0]), (0, gap), (0, 0)), constant_values=255))
    cv2.imwrite(path, np.concatenate(tiles, axis=1))


def fmt_value(value):
    """A table cell: 4 decimals, 2 for values of 100 and more."""
    return f'{value:.4f}' if abs(value) < 100 else f'{value:.2f}'


def metrics_table(runs):
    """(header, rows, best) of the evaluation means; best[col] = the winning run of that column."""
    cols = list(next(iter(runs.values()))['mean'])
    best = {}
    for c in cols:
        pick = min if lower_is_better(c) else max
        best[c] = pick(runs, key=lambda r: runs[r]['mean'][c])
    header = ['run'] + [f'{c} {"↓" if lower_is_better(c) else "↑"}' for c in cols]
    rows = [[r] + [fmt_value(runs[r]['mean'][c]) for c in cols] for r in runs]
    return header, rows, {cols.index(c) + 1: best[c] for c in cols}


def better_than(metric, a, b):
    """+1 if value ``a`` is better than ``b`` on ``metric``, -1 if worse, 0 if within RELATIVE_TIE."""
    if abs(a - b) <= RELATIVE_TIE * max(abs(a), abs(b), 1e-12):
        return 0
    return 1 if (a < b) == lower_is_better(metric) else -1


def compare(runs, a, b):
    """Sentences comparing run ``a`` with run ``b`` on every metric (which one is better)."""
    lines = []
    for c, va in runs[a]['mean'].items():
        vb = runs[b]['mean'][c]
        verdict = {1: f'{a} is better', -1: f'{b} is better', 0: 'equal within 0.1%'}[better_than(c, va, vb)]
        lines.append(f'{c}: {a} {fmt_value(va)} vs {b} {fmt_value(vb)} -> {verdict}')
    return lines


def _img_b64(path):
    with open(path, 'rb') as f:
        return 'data:image/png;base64,' + base64.b64encode(f.read()).decode()


def eval_table(eval_json):
    """The report table of an ``evaluate_sr.py`` results.json: {title, header, rows, best, notes}."""
    with open(eval_json) as f:
        evaluation = json.load(f)
    header, rows, best = metrics_table(evaluation['runs'])
    notes = [f'PDM artifact rate: fraction of pixels whose degradation map exceeds {evaluation["pdm_threshold"]}.']
    return {'title': f'Metrics on {evaluation["images"]} held-out images', 'header': header, 'rows': rows,
            'best': best, 'notes': notes + list(evaluation.get('notes', []))}


def write_report(out_dir, title, intro, table, curves, grids, timings, findings, grid_note=None):
    """Write ``report.md`` and a self-contained ``report.html`` into ``out_dir``.

    Args:
        out_dir (str): Output folder (image paths are relative to it in the markdown).
        title (str), intro (list[str]): Heading and paragraphs.
        table (dict): ``title``, ``header``, ``rows``, ``best`` ({column: winning row label}), ``notes``.
        curves (list[str]): Curve PNGs. grids (list[str]): Image-grid PNGs.
        timings (dict): {step: seconds}. findings (list[str]): What the numbers say.
        grid_note (str | None): What the grids show (default: output above its PDM overlay).
    """
    grid_note = grid_note or 'Top: output. Bottom: its PDM overlay (red = degraded).'
    header, rows, best = table['header'], table['rows'], table['best']
    md = [f'# {title}', ''] + [p + '\n' for p in intro]
    md += [f'## {table["title"]}', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    md += ['| ' + ' | '.join(f'**{v}**' if best.get(i) == row[0] else v for i, v in enumerate(row)) + ' |'
           for row in rows]
    md += [''] + [f'- {n}' for n in table['notes']]
    md += ['', '## What the numbers say', ''] + [f'- {line}' for line in findings]
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731
    if curves:
        md += ['', '## Curves', ''] + [f'![{os.path.basename(c)}]({rel(c)})' for c in curves]
    if grids:
        md += ['', f'## Held-out images ({grid_note})', '']
        md += [f'![{os.path.basename(g)}]({rel(g)})' for g in grids]
    md += ['', '## Steps', '', '| step | seconds |', '|---|---|']
    md += [f'| {k} | {v:.0f} |' for k, v in timings.items()]
    md += [f'| total | {sum(timings.values()):.0f} |']
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
        f.write('\n'.join(md) + '\n')

    e = html.escape
    body_table = '<table><tr>' + ''.join(f'<th>{e(h)}</th>' for h in header) + '</tr>'
    for row in rows:
        body_table += '<tr>' + ''.join(f'<td class="{"best" if best.get(i) == row[0] else ""}">{e(v)}</td>'
                                       for i, v in enumerate(row)) + '</tr>'
    body_table += '</table>'
    body = [f'<h1>{e(title)}</h1>'] + [f'<p>{e(p)}</p>' for p in intro]
    body += [f'<h2>{e(table["title"])}</h2>', body_table]
    body += [f'<p class="note">{e(n)}</p>' for n in ['Bold: best in the column.'] + table['notes']]
    body += ['<h2>What the numbers say</h2><ul>'] + [f'<li>{e(x)}</li>' for x in findings] + ['</ul>']
    if curves:
        body += ['<h2>Curves</h2>'] + [f'<img src="{_img_b64(c)}" alt="{e(os.path.basename(c))}">' for c in curves]
    if grids:
        body += [f'<h2>Held-out images</h2><p class="note">{e(grid_note)}</p>']
        body += [f'<img src="{_img_b64(g)}" alt="{e(os.path.basename(g))}">' for g in grids]
    body += ['<h2>Steps</h2><table><tr><th>step</th><th>seconds</th></tr>']
    body += [f'<tr><td>{e(k)}</td><td>{v:.0f}</td></tr>' for k, v in timings.items()]
    body += [f'<tr><td><b>total</b></td><td><b>{sum(timings.values()):.0f}</b></td></tr></table>']
    style = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}'
             'table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;'
             'text-align:right}td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;'
             'background:#e8f5e9}img{max-width:100%;margin:.5em 0;border:1px solid #ddd}.note{color:#666}')
    with open(os.path.join(out_dir, 'report.html'), 'w') as f:
        f.write(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{e(title)}</title>'
                f'<style>{style}</style></head><body>{"".join(body)}</body></html>\n')


def claim_verdict(claim):
    """'holds' / 'does NOT hold' / 'not resolved' of a claim decided over seeds (``holds``: True, False or None)."""
    return {True: 'holds', False: 'does NOT hold', None: 'not resolved'}[claim['holds']]
