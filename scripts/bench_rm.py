"""Throughput of the reward model vs global IQA models from pyiqa (built without weights), in one run.

    python scripts/bench_rm.py [--sizes 256 512] [--repeats 3] [--threads 2] [--models musiq topiq [maniqa]]

For each model and size: forward (eval, no grad) and forward+backward to the input image (the way
a reward is used in RLHF: network weights frozen, gradient w.r.t. the SR output), images per second
and time relative to the default FinPercep-RM (stage 3, EfficientNet-Lite0, full-resolution map).
The pyiqa architectures are built with ``pretrained=False`` (random weights: the same compute);
MANIQA's ViT is created through timm with ``pretrained=True`` hard-coded, so timm is told not to
load weights while it is built. Nothing is downloaded. MANIQA is opt-in: in eval mode it scores 20
crops of 224 px with a ViT-B/8 (pyiqa's protocol), so on a 2-core CPU its passes take minutes each.
"""
import argparse
import contextlib
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def build_models(names):
    """name -> (callable image -> scalar-able tensor, module)."""
    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    models = {
        'FinPercep-RM stage3 (map)': FinPercepRewardNet(stage=3),
        'FinPercep-RM stage0 (global)': FinPercepRewardNet(stage=0),
    }
    for name in names:
        if name == 'musiq':
            from pyiqa.archs.musiq_arch import MUSIQ
            models['pyiqa MUSIQ'] = MUSIQ(pretrained=False)
        elif name == 'topiq':
            from pyiqa.archs.topiq_arch import CFANet
            models['pyiqa TOPIQ-NR (res50)'] = CFANet(use_ref=False, backbone_pretrain=False, pretrained=False)
        elif name == 'maniqa':
            from pyiqa.archs.maniqa_arch import MANIQA
            with _timm_without_weights():
                models['pyiqa MANIQA'] = MANIQA(pretrained=False)
        else:
            raise SystemExit(f'unknown model {name}: choose musiq, topiq, maniqa')
    for model in models.values():
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return models


def _reward_sum(out):
    if isinstance(out, dict):  # FinPercep-RM: the paper's reward, global score + map term
        return out['score'].sum() + (1 - out['pdm'].amax(dim=(1, 2, 3))).sum()
    return out.sum()


def time_model(model, size, repeats, backward):
    """Seconds per image (median of ``repeats`` after one warm-up)."""
    times = []
    for i in range(repeats + 1):
        x = torch.rand(1, 3, size, size, requires_grad=backward)
        start = time.perf_counter()
        if backward:
            _reward_sum(model(x)).backward()
        else:
            with torch.no_grad():
                model(x)
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--models', nargs='+', default=['musiq', 'topiq'])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = build_models(args.models)
    print(f'torch {torch.__version__}, {args.threads} threads, batch 1, median of {args.repeats}')
    print(f'{"model":32s} {"size":>5s} {"fwd img/s":>10s} {"fwd x RM":>9s} {"fwd+bwd img/s":>14s} {"f+b x RM":>9s}')
    for size in args.sizes:
        ref = None
        for name, model in models.items():
            fwd = time_model(model, size, args.repeats, backward=False)
            fb = time_model(model, size, args.repeats, backward=True)
            ref = ref or (fwd, fb)  # the first model is the default RM
            print(f'{name:32s} {size:5d} {1 / fwd:10.2f} {fwd / ref[0]:9.2f} {1 / fb:14.2f} {fb / ref[1]:9.2f}',
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
