"""Import every module of a folder whose file name ends with a BasicSR suffix, so it registers."""
import importlib
import os


def import_suffix_modules(package_name, package_file, suffix):
    """Import ``<package_name>.<stem>`` for every ``<stem><suffix>`` file beside ``package_file``.

    Args:
        package_name (str): Dotted name of the package, e.g. ``'finpercep_basicsr.archs'``.
        package_file (str): The package's ``__file__``; its folder is scanned (not recursively).
        suffix (str): BasicSR's file suffix, e.g. ``'_arch.py'``.

    Returns:
        list[module]: The imported modules, sorted by file name so registration order is stable.
    """
    folder = os.path.dirname(os.path.abspath(package_file))
    stems = sorted(name[:-3] for name in os.listdir(folder) if name.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{stem}') for stem in stems]
