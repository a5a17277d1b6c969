"""Checks an option file before BasicSR runs it, so mistakes get one clear message, not a traceback."""
import difflib
import os

import yaml

from finpercep_basicsr.utils.errors import UserInputError

OPTIMIZERS = ('Adam', 'AdamW', 'Adamax', 'SGD', 'ASGD', 'RMSprop', 'Rprop')


class OptionError(UserInputError):
    """An option file that cannot run; the message names the file and the key."""


def _registries():
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
    return {'arch': ARCH_REGISTRY, 'dataset': DATASET_REGISTRY, 'loss': LOSS_REGISTRY,
            'metric': METRIC_REGISTRY, 'model': MODEL_REGISTRY}


def _typed_entries(opt):
    """Yield (key path, registry name, type name) for every ``type:`` that BasicSR looks up."""
    yield 'model_type', 'model', opt.get('model_type', 'SRModel')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict):
            yield f'{key}.type', 'arch', value.get('type')
    for phase, dataset in (opt.get('datasets') or {}).items():
        if isinstance(dataset, dict):
            yield f'datasets.{phase}.type', 'dataset', dataset.get('type')
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(value, dict) and 'type' in value:
            yield f'train.{key}.type', 'loss', value['type']
    for key, value in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(value, dict):
            yield f'val.metrics.{key}.type', 'metric', value.get('type')


def load_option_file(path):
    """Read a YAML option file; errors name the file."""
    if not os.path.isfile(path):
        raise OptionError(f'option file not found: {path}')
    try:
        with open(path) as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise OptionError(f'{path}: not valid YAML: {err}') from err
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: expected a mapping of options, got {type(opt).__name__}')
    return opt


def check_options(path, is_train=True):
    """Validate the option file at ``path`` against BasicSR's registries and the file system.

    Args:
        path (str): YAML option file.
        is_train (bool): Training (checks the ``train`` section) or testing.

    Returns:
        dict: The loaded options.

    Raises:
        OptionError: With the file, the key and, for unknown types, the registry and close matches.
    """
    opt = load_option_file(path)
    for key in ('name', 'datasets') + (('train',) if is_train else ()):
        if key not in opt:
            raise OptionError(f'{path}: missing required key {key!r}')
    registries = _registries()
    for key_path, registry_name, type_name in _typed_entries(opt):
        if key_path.startswith('train.optim_'):
            if type_name not in OPTIMIZERS:
                raise OptionError(f'{path}: {key_path}: unknown optimizer {type_name!r}; '
                                  f'BasicSR supports {", ".join(OPTIMIZERS)}')
            continue
        if key_path.startswith('train.scheduler'):
            continue
        registry = registries[registry_name]
        if type_name is None:
            raise OptionError(f'{path}: {key_path} is missing')
        if type_name not in registry:
            close = difflib.get_close_matches(str(type_name), list(registry.keys()), n=3, cutoff=0.5)
            hint = f'; did you mean {" or ".join(close)}?' if close else ''
            raise OptionError(f'{path}: {key_path}: {type_name!r} is not in BasicSR\'s {registry_name} '
                              f'registry{hint} (is the package that defines it imported?)')
    for phase, dataset in opt['datasets'].items():
        for key, value in (dataset or {}).items():
            if (key.startswith('dataroot') or key == 'meta_info_file') and value is not None:
                folder = os.path.expanduser(str(value))
                if not os.path.exists(folder):
                    raise OptionError(f'{path}: datasets.{phase}.{key}: {folder} does not exist')
    return opt
