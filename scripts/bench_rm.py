"""Throughput of the reward model vs global IQA models from pyiqa (built without weights), in one interleaved run.

    python scripts/bench_rm.py [--reward-opt options/pretrained/finpercep_rm.yml] [--sizes 256 512] [--repeats 3]
        [--threads 2] [--models nima musiq topiq [maniqa]]

For each model and size: forward (eval, no grad) and forward+backward to the input image, images per
second and time relative to the first FinPercep-RM row. That row is the network of ``--reward-opt``
(``network_reward``; default: the shipped ``options/pretrained/finpercep_rm.yml`` when it exists;
its checkpoint is not loaded), else the default stage-3 net. A last table gives that model's
forward+backward time as a ratio to NIMA and MUSIQ per size, and the cost bar (<= 0.5x NIMA and
<= 0.3x MUSIQ at 512 px). Nothing is downloaded; MANIQA is opt-in (minutes per pass on a CPU).
See ``finpercep_basicsr.evaluation.rm_cost_bench``.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHIPPED_OPT = os.path.join(ROOT, 'options', 'pretrained', 'finpercep_rm.yml')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--reward-opt', default=SHIPPED_OPT if os.path.isfile(SHIPPED_OPT) else None,
                        help='option file whose network_reward is the reference row (default: the shipped one)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--models', nargs='+', default=['nima', 'musiq', 'topiq'],
                        help='pyiqa models: nima, musiq, topiq, maniqa')
    args = parser.parse_args(argv)
    from finpercep_basicsr.evaluation.rm_cost_bench import run_rm_cost_bench
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    return exit_code_for_user_errors(run_rm_cost_bench, args.reward_opt, args.sizes, args.repeats, args.threads,
                                     args.models)


if __name__ == '__main__':
    sys.exit(main())
