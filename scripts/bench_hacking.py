"""The reward-hacking benchmark: RLHF set-ups x seeds on photos held out from the reward model and the
generator, judged by an independent reward model.

    python scripts/bench_hacking.py -opt options/bench/hacking_realesrgan.yml --out bench_hacking \
        [--seeds 0 1 2] [--setups global_only finpercep_ccl] [--jobs 2]

Trains every (set-up, seed) with the train entry (resumable: rerun the same command), measures each
run's final weights on the held-out pairs (PSNR, SSIM, FSIM, GMSD, a no-reference metric, every
set-up's own reward, the judge's score and PDM artifact rate, the Laplacian artifact index relative
to GT), and writes mean +- std over seeds per set-up, the paper's claims checked on them, reward
curves with seed bands, reward gain against PSNR change, and image grids with the judge's PDM.
See ``finpercep_basicsr.hacking`` for the option file and the output layout.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', '--opt', required=True, help='bench option file (options/bench/*.yml)')
    p.add_argument('--out', required=True, help='output folder (rerun with the same folder to resume)')
    p.add_argument('--seeds', type=int, nargs='+', help='override the option file\'s seeds')
    p.add_argument('--setups', nargs='+', help='only these set-ups (labels of the option file)')
    p.add_argument('--jobs', type=int, default=1, help='trainings run side by side (each gets cores/jobs threads)')
    p.add_argument('--rewrite-options', action='store_true', help='regenerate OUT/options (discards edits there)')
    p.add_argument('--grid-images', type=int, default=3, help='held-out images shown with the judge\'s PDM')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.hacking.bench import main as bench
    return bench(args)


if __name__ == '__main__':
    sys.exit(main())
