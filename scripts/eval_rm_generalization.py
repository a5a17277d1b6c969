"""Generalisation benchmark of a reward model on held-out SR families and a hacked generator, beside trivial detectors.

    python scripts/eval_rm_generalization.py --reward-opt options/pretrained/finpercep_rm.yml \
        --fgr datasets/fgr_heldout --hack-start START --hack-out HACKED --hack-gt GT --out results/rm_gen.json

Prints per family: map pixel AUC, triplet accuracy and SRCC of the reward model, a constant map, the
Laplacian-energy detector and the blur detector, and whether the model beats the best of them; see
``finpercep_basicsr.evaluation.rm_generalization_report`` for all options and the JSON layout.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    from finpercep_basicsr.evaluation.rm_generalization_report import main as evaluate
    return evaluate(argv)


if __name__ == '__main__':
    sys.exit(main())
