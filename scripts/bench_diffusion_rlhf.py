"""Time and peak memory of one RLHF step per diffusion generator, and the reward model's share.

    python scripts/bench_diffusion_rlhf.py --size 32 --repeats 3 --algorithm refl

Builds tiny random SD/SeeSR folders (tests/diffusion_fixture.py layouts) at the stated size, or
uses ``--sd-path``/``--seesr-path`` for real weights. The reward is FinPercep-RM stage 3 on
EfficientNet-Lite0 (random weights: timing does not depend on values). Peak memory: CUDA peak
allocation on a GPU; on CPU the growth of the process's max RSS during the step (a lower bound).
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

import torch  # noqa: E402

REWARD = {'type': 'FinPercepRewardLoss', 'map_reduce': 'smooth_max', 'pretrain_path': None,
          'network_opt': {'type': 'FinPercepRewardNet', 'encoder': 'efficientnet-lite0', 'pretrained': False, 'stage': 3}}


class TimedReward(torch.nn.Module):
    """Wraps a reward loss and accumulates the time of its forward passes (backward timed apart)."""

    def __init__(self, loss):
        super().__init__()
        self.loss, self.seconds, self.loss_weight = loss, 0.0, loss.loss_weight

    def forward(self, sr, gt=None, return_terms=False):
        start = time.perf_counter()
        out = self.loss(sr, gt, return_terms=return_terms)
        self.seconds += time.perf_counter() - start
        return out


def bench_one(policy, reward, algorithm, lq, repeats):
    from copy import deepcopy

    from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
    algo = build_rl_algorithm({'algorithm': algorithm, 'group_size': 2})
    optim = torch.optim.Adam(policy.trainable_parameters(), lr=1e-5)
    ref = deepcopy(policy).requires_grad_(False)
    model = SimpleNamespace(net_g=policy, get_bare_model=lambda n: n, lq=lq, gt=None, net_ref=ref, grad_steps=1,
                            opt={'dist': False}, curriculum=SimpleNamespace(step=lambda it: [(reward, 1.0)]))

    def generator_loss(sr, it):  # what FinPercepRLHFModel._generator_loss does with the reward alone
        loss = reward(sr, None)
        return loss, {'l_total': loss}
    model._generator_loss = generator_loss
    times, shares, mems = [], [], []
    for i in range(repeats + 1):  # the first run warms up
        reward.seconds = 0.0
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        sr, total, _ = algo.generator_loss(model, i)
        total.backward()
        optim.step()
        elapsed = time.perf_counter() - start
        if i:
            times.append(elapsed)
            shares.append(reward.seconds / elapsed)
            mems.append(torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    med = sorted(times)[len(times) // 2]
    return med, sorted(shares)[len(shares) // 2], max(mems)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=32, help='SR size (LQ = size / 4)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--steps', type=int, default=4, help='SeeSR sampling steps')
    p.add_argument('--algorithm', default='refl', choices=['refl', 'grpo', 'dpo'])
    p.add_argument('--sd-path'), p.add_argument('--seesr-path')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import finpercep_basicsr  # noqa: F401
    from basicsr.losses import build_loss

    from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
    from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
    tmp = tempfile.mkdtemp(prefix='bench_diffusion_')
    sd, seesr = args.sd_path, args.seesr_path
    if sd is None:
        from diffusion_fixture import make_sd_folder, make_seesr_folder
        sd, seesr = make_sd_folder(os.path.join(tmp, 'sd')), make_seesr_folder(os.path.join(tmp, 'seesr'))
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    reward = TimedReward(build_loss(dict(REWARD))).to(device)
    lq = torch.rand(args.batch, 3, args.size // 4, args.size // 4, device=device)
    policies = {'OSEDiff': lambda: FinPercepOSEDiffGenerator(sd, prompt='a photo', explore_sigma=0.05),
                'SeeSR': lambda: FinPercepSeeSRGenerator(sd, seesr, num_steps=args.steps, prompt='a photo')}
    print(f'one {args.algorithm} step, SR {args.size}x{args.size}, batch {args.batch}, device {device.type}, '
          f'{args.threads} thread(s), {"tiny random" if args.sd_path is None else "given"} weights')
    for name, make in policies.items():
        policy = make().to(device)
        sec, share, mem = bench_one(policy, reward, args.algorithm, lq, args.repeats)
        print(f'{name:8s} step {sec * 1000:8.1f} ms   reward share {100 * share:5.1f} %   peak mem +{mem:7.1f} MiB')


if __name__ == '__main__':
    main()
