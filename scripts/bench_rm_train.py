"""Samples per second of a reward-model training step, uncached vs from the feature cache, in one interleaved run.

    python scripts/bench_rm_train.py [--opt options/train/FinPercepRM/stage3.yml] [--size 256] [--batch 8]
        [--repeats 5] [--threads 2] [--bf16]

The model is the option file's (no checkpoint loaded: the weights do not change the compute), fed random batches.
``cached`` is ``train.feature_cache`` with every sample already kept. See
``finpercep_basicsr.evaluation.rm_train_bench``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', default='options/train/FinPercepRM/stage3.yml', help='an RM training option file')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--bf16', action='store_true', help='also time both under bf16 autocast')
    args = parser.parse_args(argv)
    from finpercep_basicsr.evaluation.rm_train_bench import run_rm_train_bench
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        run_rm_train_bench(args.opt, args.size, args.batch, args.repeats, args.threads, args.bf16)

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
