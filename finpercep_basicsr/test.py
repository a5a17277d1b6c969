"""Testing entry: ``python -m finpercep_basicsr.test -opt options/test/....yml`` (BasicSR's test_pipeline)."""
import sys

from finpercep_basicsr.cli import run_pipeline


def main(argv=None):
    from basicsr.test import test_pipeline
    return run_pipeline(test_pipeline, is_train=False, argv=argv)


if __name__ == '__main__':
    sys.exit(main())
