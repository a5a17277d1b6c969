"""Time one ReFL step of FinPercepRLHFModel, split into its parts, and the reward model's share.

    python scripts/bench_rlhf.py --gt-size 128 --batch 1 --repeats 3
    python scripts/bench_rlhf.py -opt options/train/RLHF/RealESRGAN/rlhf_realesrgan_x4_finpercep.yml

Parts: generator forward (with graph), reward forward, reward backward (to the SR image),
generator backward (from the SR gradient), regulariser (reference forward + pixel/reference L1,
forward and backward), optimiser step. Without ``-opt``: Real-ESRGAN x4plus (RRDBNet 64x23) and
the stage-3 FinPercep-RM on EfficientNet-Lite0; weights are random unless the option file points
at checkpoints (timing does not depend on the values). Medians over ``--repeats`` after a warm-up.
"""
import argparse
import os
import sys
import time
from copy import deepcopy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import yaml  # noqa: E402

DEFAULT_G = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23,
             'num_grow_ch': 32, 'scale': 4}
DEFAULT_REWARD = {'type': 'FinPercepRewardLoss', 'map_reduce': 'smooth_max', 'pretrain_path': None,
                  'network_opt': {'type': 'FinPercepRewardNet', 'encoder': 'efficientnet-lite0',
                                  'pretrained': False, 'stage': 3}}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench(network_g, reward_opt, gt_size, batch, repeats, threads):
    """Median seconds of each part of one RLHF step: dict part -> seconds."""
    import finpercep_basicsr  # noqa: F401
    from basicsr.losses import build_loss
    from finpercep_basicsr.archs.generator_policy import build_policy

    torch.set_num_threads(threads)
    policy = build_policy(network_g)
    ref = policy.make_reference()
    reward = build_loss(deepcopy(reward_opt))
    pix = build_loss({'type': 'L1Loss', 'loss_weight': 1.0})
    optim = torch.optim.Adam(policy.trainable_parameters(), lr=1e-5)
    lq = torch.rand(batch, 3, gt_size // policy.scale, gt_size // policy.scale)
    gt = torch.rand(batch, 3, gt_size, gt_size)
    runs = []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        t = {}
        optim.zero_grad(set_to_none=True)
        sr, t['generator forward'] = _timed(lambda: policy(lq, grad_steps=1))
        sr_leaf = sr.detach().requires_grad_(True)
        loss, t['reward forward'] = _timed(lambda: reward(sr_leaf, gt))
        _, t['reward backward'] = _timed(lambda: loss.backward())

        def regulariser():
            with torch.no_grad():
                ref_out = ref(lq, grad_steps=0)
            reg = pix(sr_leaf, gt) + pix(sr_leaf, ref_out)
            reg.backward()
        _, t['regulariser'] = _timed(regulariser)
        _, t['generator backward'] = _timed(lambda: sr.backward(sr_leaf.grad))
        _, t['optimiser step'] = _timed(optim.step)
        runs.append(t)
    return {k: sorted(r[k] for r in runs[1:])[len(runs[1:]) // 2] for k in runs[0]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', help='RLHF option file (network_g and train.reward_opt are used)')
    p.add_argument('--gt-size', type=int, default=128, help='SR patch size (the LQ is gt-size / scale)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    network_g, reward_opt = DEFAULT_G, DEFAULT_REWARD
    if args.opt:
        with open(args.opt) as f:
            opt = yaml.safe_load(f)
        network_g = opt['network_g']
        reward_opt = dict(opt['train'].get('reward_opt') or DEFAULT_REWARD)
        if not os.path.isfile(str(reward_opt.get('pretrain_path'))):  # timing needs no trained weights
            reward_opt['pretrain_path'] = None
    times = bench(network_g, reward_opt, args.gt_size, args.batch, args.repeats, args.threads)
    total = sum(times.values())
    print(f'one RLHF step: generator {network_g["type"]}, reward {reward_opt["type"]} '
          f'({reward_opt.get("network_opt", {}).get("encoder", reward_opt.get("metric", ""))}), '
          f'SR patch {args.gt_size}x{args.gt_size}, batch {args.batch}, {args.threads} threads, '
          f'median of {args.repeats}')
    for name, sec in times.items():
        print(f'  {name:<20s} {sec * 1000:9.1f} ms  {100 * sec / total:5.1f} %')
    rm = times['reward forward'] + times['reward backward']
    print(f'  {"total":<20s} {total * 1000:9.1f} ms')
    print(f'reward model share (forward + backward): {100 * rm / total:.1f} %')
    return 0


if __name__ == '__main__':
    sys.exit(main())
