"""Checks an option file before BasicSR runs it, so mistakes get one clear message, not a traceback."""
import difflib
import os

import yaml

from finpercep_basicsr.utils.errors import UserInputError

OPTIMIZERS = ('Adam', 'AdamW', 'Adamax', 'SGD', 'ASGD', 'RMSprop', 'Rprop')  # BaseModel.get_optimizer
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')  # BaseModel.setup_schedulers


class OptionError(UserInputError):
    """An option file that cannot run; the message names the file and the key."""


def _registries():
    """Where each kind of ``type`` is looked up: BasicSR's registries, or the fixed names of its base model."""
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
    return {'arch': ARCH_REGISTRY, 'dataset': DATASET_REGISTRY, 'loss': LOSS_REGISTRY,
            'metric': METRIC_REGISTRY, 'model': MODEL_REGISTRY, 'optimizer': OPTIMIZERS, 'scheduler': SCHEDULERS}


def _loss_entries(prefix, loss_opt):
    """A loss's ``type`` and the ``type`` of the network inside it (reward losses build one)."""
    if 'type' in loss_opt:
        yield f'{prefix}.type', 'loss', loss_opt['type']
    network_opt = loss_opt.get('network_opt')
    if isinstance(network_opt, dict) and 'type' in network_opt:
        yield f'{prefix}.network_opt.type', 'arch', network_opt['type']


def _typed_entries(opt):
    """Yield (key path, registry name, type name) for every ``type:`` that BasicSR or the plugin looks up."""
    yield 'model_type', 'model', opt.get('model_type', 'SRModel')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict):
            yield f'{key}.type', 'arch', value.get('type')
    for phase, dataset in (opt.get('datasets') or {}).items():
        if isinstance(dataset, dict):
            yield f'datasets.{phase}.type', 'dataset', dataset.get('type')
    train = opt.get('train') or {}
    for key, value in train.items():
        if not isinstance(value, dict):
            continue
        if key.endswith('_opt'):
            yield from _loss_entries(f'train.{key}', value)
        elif key.startswith('optim_') and 'type' in value:
            yield f'train.{key}.type', 'optimizer', value['type']
        elif key == 'scheduler' and 'type' in value:
            yield 'train.scheduler.type', 'scheduler', value['type']
    stages = (train.get('ccl') or {}).get('stages') if isinstance(train.get('ccl'), dict) else None
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if isinstance(stage, dict) and isinstance(stage.get('reward'), dict):
            yield from _loss_entries(f'train.ccl.stages[{i}].reward', stage['reward'])
    for key, value in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(value, dict):
            yield f'val.metrics.{key}.type', 'metric', value.get('type')


def _unknown_type_message(key_path, type_name, registry_name, registry):
    close = difflib.get_close_matches(str(type_name), list(registry.keys() if hasattr(registry, 'keys') else registry),
                                      n=3, cutoff=0.5)
    hint = f'; did you mean {" or ".join(close)}?' if close else ''
    if isinstance(registry, tuple):  # BasicSR's base model knows a fixed list of names
        return f'{key_path}: {type_name!r} is not one of BasicSR\'s {registry_name}s ({", ".join(registry)}){hint}'
    return (f'{key_path}: {type_name!r} is not in BasicSR\'s {registry_name} registry{hint} '
            f'(is the package that defines it imported?)')


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
        registry = registries[registry_name]
        if type_name is None:
            raise OptionError(f'{path}: {key_path} is missing')
        # BasicSR registers some archs with a suffix (SRVGGNetCompact_basicsr) and finds them by the plain name
        if type_name not in registry and not (isinstance(type_name, str) and f'{type_name}_basicsr' in registry):
            raise OptionError(f'{path}: {_unknown_type_message(key_path, type_name, registry_name, registry)}')
    for phase, dataset in opt['datasets'].items():
        for key, value in (dataset or {}).items():
            is_path = (key.startswith('dataroot') or key == 'meta_info_file') and key != 'dataroot_repeat'
            if is_path and value is not None:
                for folder in value if isinstance(value, (list, tuple)) else [value]:  # a list of FGR roots
                    folder = os.path.expanduser(str(folder))
                    if not os.path.exists(folder):
                        raise OptionError(f'{path}: datasets.{phase}.{key}: {folder} does not exist')
    _check_weight_paths(path, opt)
    return opt


def _check_weight_paths(path, opt):
    """Every ``network_*.<x>_path`` given must exist (released weights); checkpoints are checked when loaded."""
    entries = [(f'{key}.{k}', v) for key, section in opt.items()
               if key.startswith('network_') and isinstance(section, dict) for k, v in section.items()
               if k.endswith('_path')]
    for key_path, value in entries:
        if isinstance(value, str) and not os.path.exists(os.path.expanduser(value)):
            raise OptionError(f'{path}: {key_path}: {value} does not exist (see the comment next to it in the file)')
