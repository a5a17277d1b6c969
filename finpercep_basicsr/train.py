"""Training entry: ``python -m finpercep_basicsr.train -opt options/train/....yml [--auto_resume]``.

Real-ESRGAN's pattern (import the plugin, then BasicSR's ``train_pipeline``) with the fixes BasicSR
needs without a GPU: resume states load on the CPU, ``--launcher pytorch`` uses gloo when CUDA is
absent. Experiments, ``tb_logger`` and relative dataset paths are resolved from the working folder.
"""
import sys

from finpercep_basicsr.cli import run_pipeline


def main(argv=None):
    from basicsr.train import train_pipeline
    return run_pipeline(train_pipeline, is_train=True, argv=argv)


if __name__ == '__main__':
    sys.exit(main())
