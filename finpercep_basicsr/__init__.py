"""FinPercep-RM for BasicSR: fine-grained reward models and RLHF for real-world super-resolution.

``import finpercep_basicsr`` registers every component (archs, datasets, losses, models) in
BasicSR's registries, the way Real-ESRGAN and HAT do.
"""
import sys

__version__ = '0.1.0'


def _inside_basicsr_init():
    """True while BasicSR's own package scan is importing one of our drop-in files.

    ``basicsr/__init__.py`` sets ``__version__`` last, after its subpackages scanned their folders.
    Importing our model subpackage at that moment would need ``basicsr.archs.build_network`` before
    it exists (a circular ImportError), so the drop-in files import their own subpackage instead.
    """
    basicsr = sys.modules.get('basicsr')
    return basicsr is not None and not hasattr(basicsr, '__version__')


if not _inside_basicsr_init():
    from . import archs, data, losses, metrics, models, curriculum  # noqa: F401,E402  (registers everything)
