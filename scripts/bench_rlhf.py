"""Time one ReFL step of full vs partial fine-tuning (``rlhf.trainable``) and the reward model's share.

    python scripts/bench_rlhf.py --gt-size 128 --batch 1 --repeats 3
    python scripts/bench_rlhf.py -opt options/train/RLHF/RealESRGAN/rlhf_realesrgan_x4_finpercep.yml \\
        [--trainable 'conv_up*' 'conv_hr.*' 'conv_last.*']

Without ``-opt`` two generators, each fine-tuned in full and partially:

- Real-ESRGAN x4plus: RRDBNet (64 features, 23 blocks, growth 32), partial = the upsampling tail
  after the trunk (``conv_up*``, ``conv_hr.*``, ``conv_last.*``);
- realesr-animevideov3: SRVGGNetCompact (64 features, 16 convs, x4, PReLU), partial = its last four
  convolutions and their PReLUs (``body.28`` .. ``body.34``);

with the stage-3 FinPercep-RM on EfficientNet-Lite0 as the reward. With ``-opt``: the file's
``network_g`` and ``train.reward_opt``, partial = ``--trainable``, else the file's
``rlhf.trainable``, else the default above for its arch. Weights are random (timing does not
depend on their values; a checkpoint named in the file is not loaded).

Parts of a step: generator forward (with graph), reward forward, reward backward (to the SR
image), regulariser (reference forward without graph + pixel and reference L1, forward and
backward), generator backward (from the SR gradient), optimiser step (Adam). The configurations
are interleaved: every repeat runs each once in turn (the order alternating), so a busy machine
slows all alike; the table shows medians over ``--repeats`` after one warm-up round.
"""
import argparse
import os
import sys
import time
from copy import deepcopy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

ARCHS = {
    'RRDBNet-x4plus': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23,
                        'num_grow_ch': 32, 'scale': 4}, ['conv_up*', 'conv_hr.*', 'conv_last.*']),
    'SRVGG-animevideov3': ({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                            'num_conv': 16, 'upscale': 4, 'act_type': 'prelu'}, [r're:body\.(2[89]|3[0-4])\..*']),
}
DEFAULT_TRAINABLE = {network_g['type']: patterns for network_g, patterns in ARCHS.values()}
DEFAULT_REWARD = {'type': 'FinPercepRewardLoss', 'map_reduce': 'smooth_max', 'pretrain_path': None,
                  'network_opt': {'type': 'FinPercepRewardNet', 'encoder': 'efficientnet-lite0',
                                  'pretrained': False, 'stage': 3}}
PARTS = ('generator forward', 'reward forward', 'reward backward', 'regulariser', 'generator backward',
         'optimiser step')
COLUMNS = ('G-fwd', 'RM-fwd', 'RM-bwd', 'reg', 'G-bwd', 'optim')


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class StepBench:
    """One configuration: a policy (all or ``trainable`` parameters trained), its reference, a reward."""

    def __init__(self, network_g, trainable, reward, gt_size, batch):
        from basicsr.losses import build_loss
        from finpercep_basicsr.archs.generator_policy import build_policy

        torch.manual_seed(0)
        self.policy = build_policy(network_g)
        self.policy.restrict_trainable(trainable)
        self.ref = self.policy.make_reference()
        self.reward = reward
        self.pix = build_loss({'type': 'L1Loss', 'loss_weight': 1.0})
        params = self.policy.trainable_parameters()
        self.n_trained = sum(p.numel() for p in params)
        self.n_total = sum(p.numel() for p in self.policy.weights_module().parameters())
        self.optim = torch.optim.Adam(params, lr=1e-5)
        lq_size = gt_size // self.policy.scale
        self.lq = torch.rand(batch, 3, lq_size, lq_size)
        self.gt = torch.rand(batch, 3, gt_size, gt_size)

    def step(self):
        """Run one step; returns seconds per part (``PARTS``)."""
        t = {}
        self.optim.zero_grad(set_to_none=True)
        sr, t['generator forward'] = _timed(lambda: self.policy(self.lq, grad_steps=1))
        sr_leaf = sr.detach().requires_grad_(True)
        loss, t['reward forward'] = _timed(lambda: self.reward(sr_leaf, self.gt))
        _, t['reward backward'] = _timed(loss.backward)

        def regulariser():
            with torch.no_grad():
                ref_out = self.ref(self.lq, grad_steps=0)
            (self.pix(sr_leaf, self.gt) + self.pix(sr_leaf, ref_out)).backward()
        _, t['regulariser'] = _timed(regulariser)
        _, t['generator backward'] = _timed(lambda: sr.backward(sr_leaf.grad))
        _, t['optimiser step'] = _timed(self.optim.step)
        return t


def bench(configs, reward_opt, gt_size, batch, repeats, threads):
    """Median seconds per part of each configuration, measured interleaved.

    Args:
        configs (list[tuple[str, str, dict, list | None]]): ``(generator label, tuning label,
            network_g, trainable patterns or None for all)``.
        reward_opt (dict): Reward loss options (one frozen reward shared by every configuration).
        gt_size (int): SR patch size; the LQ input is ``gt_size / scale``.
        batch (int): Images per step.
        repeats (int): Timed rounds after one warm-up round.
        threads (int): torch threads.

    Returns:
        list[dict]: Per configuration ``label``, ``tuning``, ``trained``, ``total`` (parameters) and
        ``times`` (part -> median seconds).
    """
    import finpercep_basicsr  # noqa: F401
    from basicsr.losses import build_loss

    torch.set_num_threads(threads)
    reward = build_loss(deepcopy(reward_opt))
    benches = [StepBench(g, trainable, reward, gt_size, batch) for _, _, g, trainable in configs]
    runs = [[] for _ in benches]
    for r in range(repeats + 1):  # round 0 warms up allocators and kernels
        order = list(range(len(benches)))
        for i in (order if r % 2 else order[::-1]):
            t = benches[i].step()
            if r:
                runs[i].append(t)
    out = []
    for (label, tuning, _, _), b, rs in zip(configs, benches, runs):
        times = {k: sorted(x[k] for x in rs)[len(rs) // 2] for k in PARTS}
        out.append({'label': label, 'tuning': tuning, 'trained': b.n_trained, 'total': b.n_total, 'times': times})
    return out


def format_table(results):
    """The printed table: one row per configuration, times in ms, the RM share and the speed-up."""
    head = (f'{"generator":<20s} {"tuning":<8s} {"trained/params":>17s} ' + ' '.join(f'{c:>8s}' for c in COLUMNS)
            + f' {"step":>8s} {"RM%":>6s} {"x-full":>6s}')
    lines = [head + '   (times in ms)']
    full = {}
    for res in results:
        step = sum(res['times'].values())
        if res['tuning'] == 'full':
            full[res['label']] = step
        rm = res['times']['reward forward'] + res['times']['reward backward']
        speedup = f'{full[res["label"]] / step:6.2f}' if res['label'] in full else f'{"-":>6s}'
        trained = f'{res["trained"]}/{res["total"]}'
        lines.append(f'{res["label"]:<20s} {res["tuning"]:<8s} {trained:>17s} '
                     + ' '.join(f'{res["times"][p] * 1000:8.1f}' for p in PARTS)
                     + f' {step * 1000:8.1f} {100 * rm / step:6.1f} {speedup}')
    return lines


def _configs_from_file(path, trainable):
    from finpercep_basicsr.utils.errors import UserInputError
    from finpercep_basicsr.utils.option_check import load_option_file
    opt = load_option_file(path)
    if 'network_g' not in opt:
        raise UserInputError(f'{path}: no network_g section')
    network_g = opt['network_g']
    partial = trainable or (opt.get('rlhf') or {}).get('trainable') or DEFAULT_TRAINABLE.get(network_g.get('type'))
    if partial is None:
        raise UserInputError(f'{path}: no rlhf.trainable and no default partial selection for '
                             f'{network_g.get("type")}; pass --trainable PATTERN ...')
    reward_opt = dict((opt.get('train') or {}).get('reward_opt') or DEFAULT_REWARD)
    reward_opt['pretrain_path'] = None  # timing needs no trained weights
    label = str(network_g.get('type'))
    return [(label, 'full', network_g, None), (label, 'partial', network_g, partial)], reward_opt, partial


def run(args):
    if args.opt:
        configs, reward_opt, partial = _configs_from_file(args.opt, args.trainable)
        patterns = {configs[0][0]: partial}
    else:
        configs = [c for label, (g, pats) in ARCHS.items() for c in ((label, 'full', g, None),
                                                                  (label, 'partial', g, pats))]
        reward_opt, patterns = DEFAULT_REWARD, {label: pats for label, (_, pats) in ARCHS.items()}
    results = bench(configs, reward_opt, args.gt_size, args.batch, args.repeats, args.threads)
    net_opt = reward_opt.get('network_opt') or {}
    print(f'one ReFL step, full vs partial fine-tuning: SR patch {args.gt_size}x{args.gt_size}, batch {args.batch}, '
          f'{args.threads} threads, median of {args.repeats} interleaved repeats')
    print(f'random weights (the compute does not depend on them); reward {reward_opt["type"]} '
          f'({net_opt.get("encoder", reward_opt.get("metric", ""))}, stage {net_opt.get("stage", "-")})')
    for line in format_table(results):
        print(line)
    for label, pats in patterns.items():
        print(f'partial {label}: rlhf.trainable {list(pats)}')
    print('RM% = reward forward + backward over the step; x-full = full fine-tuning step time / this step time')
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', help='RLHF option file (network_g, train.reward_opt and rlhf.trainable are used)')
    p.add_argument('--trainable', nargs='+', help='partial fine-tuning patterns for the -opt generator')
    p.add_argument('--gt-size', type=int, default=128, help='SR patch size (the LQ is gt-size / scale)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    if args.trainable and not args.opt:
        p.error('--trainable needs -opt (without it each generator uses its default selection)')
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors
    return exit_code_for_user_errors(run, args)


if __name__ == '__main__':
    sys.exit(main())
