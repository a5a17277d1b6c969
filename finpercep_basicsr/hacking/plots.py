"""Plots of the hacking benchmark: reward curves with seed bands, reward gain against PSNR change."""
import numpy as np


def seed_band(curves):
    """(steps, mean, std) over seeds of curves [(steps, values)], on the steps every seed logged."""
    common = sorted(set.intersection(*(set(s) for s, _ in curves)))
    if not common:
        return np.array([]), np.array([]), np.array([])
    table = np.array([[dict(zip(s, v))[t] for t in common] for s, v in curves], np.float64)
    return np.array(common), table.mean(0), table.std(0)


def curve_std(curves_by_setup):
    """{setup: mean over logged iterations of the std over seeds} (0 for one seed)."""
    out = {}
    for setup, curves in curves_by_setup.items():
        _, _, std = seed_band(curves)
        out[setup] = float(std.mean()) if len(std) else float('nan')
    return out


def reward_curves_png(curves_by_setup, path, tag='reward'):
    """One panel: each set-up's training reward, mean over seeds with a +-1 std band."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for setup, curves in curves_by_setup.items():
        steps, mean, std = seed_band(curves)
        if not len(steps):
            continue
        line, = ax.plot(steps, mean, label=f'{setup} ({len(curves)} seeds)', linewidth=1.5)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel('iteration')
    ax.set_ylabel(f'{tag} (each run\'s own reward)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def gain_vs_psnr_png(runs, path):
    """Scatter: one point per run and seed, x = PSNR change vs the start, y = own reward gain."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    setups = list(dict.fromkeys(r['setup'] for r in runs))
    for setup in setups:
        points = [(r['summary']['psnr_change'], r['summary']['reward_gain']) for r in runs
                  if r['setup'] == setup and 'psnr_change' in r['summary'] and 'reward_gain' in r['summary']]
        if points:
            x, y = zip(*points)
            ax.scatter(x, y, label=setup, s=30)
    ax.axvline(0, color='k', linewidth=0.6)
    ax.axvline(-0.3, color='grey', linewidth=0.6, linestyle='--')
    ax.axhline(0, color='k', linewidth=0.6)
    ax.set_xlabel('PSNR change vs start (dB, held-out)')
    ax.set_ylabel('own reward gain vs start (held-out)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
