"""Compare SR generators on a paired test folder: PSNR/SSIM/FSIM/VIF/GMSD (pyiqa, offline), the
global FinPercep-RM score and the PDM artifact rate, per image and on average, side by side.

    python scripts/evaluate_sr.py --lq LQ_DIR --gt GT_DIR \
        --run bicubic=bicubic --run base=weights/RealESRGAN_x4plus.pth --network-opt OPT.yml \
        --run global=experiments/rlhf_global --run finpercep_ccl=experiments/rlhf_finpercep_ccl \
        --reward-opt options/test/reward_eval.yml --out results/eval

Writes OUT/results.json (every value) and OUT/results.md (the table). See
``finpercep_basicsr.evaluation.sr_evaluation`` for the run specs.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from finpercep_basicsr.utils.errors import exit_code_for_user_errors  # noqa: E402


def main(argv=None):
    from finpercep_basicsr.evaluation.sr_evaluation import main as evaluate
    return exit_code_for_user_errors(evaluate, argv)


if __name__ == '__main__':
    sys.exit(main())
