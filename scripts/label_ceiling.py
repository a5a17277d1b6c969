"""The hacking check's ceiling for a label formula (see ``finpercep_basicsr/evaluation/label_ceiling.py``).

Usage:
    python scripts/label_ceiling.py --hack-start bench_ablation/images/start \
        --hack-out bench_ablation/images/score_only_no_ceiling --hack-gt datasets/test_split/gt \
        [-opt options/data/fgr_build_default.yml] [--out ceiling.json]

Prints the pixel AUC, against the pixels where hacking added error, of the FGR label of each hacked image made with
its GT (and of the label's pixel and feature terms alone), beside the trivial detectors' on the same images. A map
that predicted its label perfectly would score the label's value.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', default='options/data/fgr_build_default.yml', help='YAML with the labels options')
    parser.add_argument('--hack-start', required=True, help='the start generator\'s outputs')
    parser.add_argument('--hack-out', required=True, help='the hacked generator\'s outputs (same file names)')
    parser.add_argument('--hack-gt', required=True, help='their GT images')
    parser.add_argument('--error-thr', type=float, default=0.05, help='added error that counts (as the hacking check)')
    parser.add_argument('--max-size', type=int, default=None, help='centre-crop images to this size')
    parser.add_argument('--out', help='write the result as JSON')
    args = parser.parse_args(argv)
    from finpercep_basicsr.evaluation.label_ceiling import label_ceiling
    from finpercep_basicsr.evaluation.rm_generalization import hack_triplets
    from finpercep_basicsr.fgr.labels import load_label_options
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        labels = load_label_options(args.opt)
        triplets = hack_triplets(args.hack_start, args.hack_out, args.hack_gt)
        result = dict(label_ceiling(triplets, labels, args.error_thr, args.max_size, progress=True), labels=labels)
        print(f'{result["images"]} images, {100 * result["added_error_fraction"]:.1f} % of pixels with added error '
              f'> {args.error_thr}; pixel AUC against them:')
        for group in ('pixel_auc', 'floors'):
            for name, value in result[group].items():
                print(f'  {"label formula" if group == "pixel_auc" else "trivial floor"}  {name:<14} {value:.3f}')
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(result, f, indent=2)
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
