"""Scans this folder for ``*_loss.py`` files and imports them, registering their classes in BasicSR."""
from finpercep_basicsr.utils.registry_scan import import_suffix_modules

_modules = import_suffix_modules(__name__, __file__, '_loss.py')
