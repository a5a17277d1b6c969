"""Drop-in for a BasicSR-style codebase: link or copy into ``basicsr/data/``; its scan of
``*_dataset.py`` files then imports this file, which registers every FinPercep dataset in that
codebase's registry. Needs ``finpercep_basicsr`` importable (``pip install -e`` or PYTHONPATH).

Only the matching subpackage is imported: BasicSR is still initialising when its scan runs, and
importing the whole plugin then would be a circular import (see scripts/link_into_basicsr.py).
"""
import finpercep_basicsr.data  # noqa: F401
