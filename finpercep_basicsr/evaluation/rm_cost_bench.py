"""Throughput of the reward model vs global IQA models from pyiqa (built without weights), in one interleaved run.

For each model and size: forward (eval, no grad) and forward+backward to the input image (the way
a reward is used in RLHF: network weights frozen, gradient w.r.t. the SR output), images per second
and time relative to the first FinPercep-RM row (the network of an option file's ``network_reward``
when one is given; its checkpoint is not loaded, the weights do not change the compute). The
passes are interleaved: every repeat times each model once in turn, so a busy machine slows all
models alike, and the medians are compared. A last table gives that model's forward+backward time
as a ratio to NIMA and MUSIQ per size, and the cost bar (<= 0.5x NIMA and <= 0.3x MUSIQ at 512 px).

The pyiqa architectures are built with ``pretrained=False`` (random weights: the same compute);
NIMA's inception_resnet_v2 and MANIQA's ViT are created through timm with ``pretrained=True``
hard-coded, so timm is told not to load weights while they are built. Nothing is downloaded. NIMA
resizes its input to 299 px in eval mode, so its cost does not grow with the image size. MANIQA is
opt-in: in eval mode it scores 20 crops of 224 px with a ViT-B/8 (pyiqa's protocol), so on a
2-core CPU its passes take minutes each.
"""
import contextlib
import os
import time

import torch

from finpercep_basicsr.evaluation.timing import median
from finpercep_basicsr.utils.errors import UserInputError

BARS = {'pyiqa NIMA (inception_resnet_v2)': ('NIMA', 0.5), 'pyiqa MUSIQ': ('MUSIQ', 0.3)}
"""Row name -> (short name, the most the reference's forward+backward may cost relative to it at ``BAR_SIZE``)."""
BAR_SIZE = 512
IQA_MODELS = ('nima', 'musiq', 'topiq', 'maniqa')


@contextlib.contextmanager
def _timm_without_weights():
    import timm
    original = timm.create_model

    def create_model(*args, **kwargs):
        kwargs['pretrained'] = False
        return original(*args, **kwargs)

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original


def reward_net_from_options(path):
    """The network ``network_reward`` of an option file names, with fresh weights (its checkpoint is not loaded)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    import finpercep_basicsr.archs  # noqa: F401  (registers the arch)
    from finpercep_basicsr.utils.network_options import network_section
    from finpercep_basicsr.utils.option_check import load_option_file
    network = network_section(load_option_file(path), 'network_reward', path)
    return ARCH_REGISTRY.get(network.pop('type'))(**network)


def _iqa_model(name):
    """(row name, module) of one pyiqa architecture of ``IQA_MODELS``, without weights."""
    if name == 'nima':
        from pyiqa.archs.nima_arch import NIMA
        with _timm_without_weights():
            return 'pyiqa NIMA (inception_resnet_v2)', NIMA(base_model_name='inception_resnet_v2', pretrained=False)
    if name == 'musiq':
        from pyiqa.archs.musiq_arch import MUSIQ
        return 'pyiqa MUSIQ', MUSIQ(pretrained=False)
    if name == 'topiq':
        from pyiqa.archs.topiq_arch import CFANet
        return 'pyiqa TOPIQ-NR (res50)', CFANet(use_ref=False, backbone_pretrain=False, pretrained=False)
    from pyiqa.archs.maniqa_arch import MANIQA
    with _timm_without_weights():
        return 'pyiqa MANIQA', MANIQA(pretrained=False)


def build_models(names, reward_opt=None):
    """Row name -> frozen eval-mode module; the first is the reference of the ratios (the ``reward_opt`` network
    when given), then FinPercep-RM stages 3 and 0, then the pyiqa models ``names`` (``IQA_MODELS``)."""
    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    unknown = [name for name in names if name not in IQA_MODELS]
    if unknown:
        raise UserInputError(f'unknown model {", ".join(unknown)}: choose {", ".join(IQA_MODELS)}')
    models = {}
    if reward_opt:
        label = os.path.splitext(os.path.basename(reward_opt))[0]
        models[f'FinPercep-RM {label}'] = reward_net_from_options(reward_opt)
    models['FinPercep-RM stage3 (map)'] = FinPercepRewardNet(stage=3)
    models['FinPercep-RM stage0 (global)'] = FinPercepRewardNet(stage=0)
    models.update(_iqa_model(name) for name in names)
    for model in models.values():
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return models


def _reward_sum(out):
    if isinstance(out, dict):  # FinPercep-RM: the paper's reward, global score + map term
        return out['score'].sum() + (1 - out['pdm'].amax(dim=(1, 2, 3))).sum()
    return out.sum()


def time_pass(model, size, backward):
    """Seconds of one pass on a random (1, 3, size, size) image."""
    x = torch.rand(1, 3, size, size, requires_grad=backward)
    start = time.perf_counter()
    if backward:
        _reward_sum(model(x)).backward()
    else:
        with torch.no_grad():
            model(x)
    return time.perf_counter() - start


def time_interleaved(models, size, repeats):
    """name -> (forward, forward+backward) seconds per image: medians of ``repeats`` rounds after a warm-up round.

    Each round runs every model once in turn, so load on a shared machine spreads over all models.
    """
    times = {name: ([], []) for name in models}
    for i in range(repeats + 1):
        for name, model in models.items():
            fwd, fb = time_pass(model, size, False), time_pass(model, size, True)
            if i:
                times[name][0].append(fwd)
                times[name][1].append(fb)
    return {name: tuple(median(t) for t in pair) for name, pair in times.items()}


def cost_lines(reference, results):
    """The reference model's forward+backward time as ratios to NIMA and MUSIQ per size, and the cost bar."""
    cols = [name for name in BARS if name in next(iter(results.values()))]
    if not cols:
        return []
    lines = [f'{reference} forward+backward cost, same run:',
             f'{"size":>5s} {"s/img":>9s} ' + ' '.join(f'{"x " + BARS[c][0]:>9s}' for c in cols)]
    for size, res in results.items():
        ratios = [res[reference][1] / res[c][1] for c in cols]
        lines.append(f'{size:5d} {res[reference][1]:9.4f} ' + ' '.join(f'{r:9.4f}' for r in ratios))
        if size == BAR_SIZE:
            checks = [f'<= {BARS[c][1]}x {BARS[c][0]}: {"met" if r <= BARS[c][1] else "NOT met"} ({r:.2f}x)'
                      for c, r in zip(cols, ratios)]
            lines.append(f'cost bar at {BAR_SIZE}^2: ' + '; '.join(checks))
    return lines


def run_rm_cost_bench(reward_opt=None, sizes=(256, 512), repeats=3, threads=2, models=('nima', 'musiq', 'topiq')):
    """Print one row per model and size, then the cost table (``scripts/bench_rm.py``).

    Args:
        reward_opt (str | None): Option file whose ``network_reward`` is the reference row.
        sizes (list[int]): Square image sizes.
        repeats (int): Timed rounds after one warm-up round.
        threads (int): torch threads.
        models (list[str]): pyiqa models (``IQA_MODELS``).

    Returns:
        dict: size -> row name -> (forward, forward+backward) median seconds per image.

    Raises:
        UserInputError: An unknown model or an option file without ``network_reward.type``.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nets = build_models(models, reward_opt)
    reference = next(iter(nets))
    print(f'torch {torch.__version__}, {threads} threads, batch 1, median of {repeats} interleaved rounds')
    print(f'{"model":32s} {"size":>5s} {"fwd img/s":>10s} {"fwd x RM":>9s} {"fwd+bwd img/s":>14s} {"f+b x RM":>9s}')
    results = {}
    for size in sizes:
        results[size] = res = time_interleaved(nets, size, repeats)
        ref = res[reference]
        for name, (fwd, fb) in res.items():
            print(f'{name:32s} {size:5d} {1 / fwd:10.2f} {fwd / ref[0]:9.2f} {1 / fb:14.2f} {fb / ref[1]:9.2f}',
                  flush=True)
    for line in cost_lines(reference, results):
        print(line)
    return results
