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
See ``finpercep_basicsr.evaluation.rlhf_step_bench``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', help='RLHF option file (network_g, train.reward_opt and rlhf.trainable are used)')
    p.add_argument('--trainable', nargs='+', help='partial fine-tuning patterns for the -opt generator')
    p.add_argument('--gt-size', type=int, default=128, help='SR patch size (the LQ is gt-size / scale)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, help='torch threads (default: torch\'s own count)')
    args = p.parse_args(argv)
    if args.trainable and not args.opt:
        p.error('--trainable needs -opt (without it each generator uses its default selection)')
    from finpercep_basicsr.evaluation.rlhf_step_bench import run_partial_tuning
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    return exit_code_for_user_errors(run_partial_tuning, args.opt, args.trainable, args.gt_size, args.batch,
                                     args.repeats, args.threads)


if __name__ == '__main__':
    sys.exit(main())
