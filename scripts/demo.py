"""The whole FinPercep pipeline on real photos and packaged pretrained weights; see ``make demo``.

    python scripts/demo.py [--quick | --full | --tiny] --out demo_out
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from finpercep_basicsr.demo.run import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
