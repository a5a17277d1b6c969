"""Every component registers in BasicSR's registries under a FinPercep name and is found by name."""
import os
import subprocess
import sys

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
from tests.helpers.opt import REPO

import finpercep_basicsr  # noqa: F401

REGISTRIES = {'arch': ARCH_REGISTRY, 'dataset': DATASET_REGISTRY, 'loss': LOSS_REGISTRY,
              'metric': METRIC_REGISTRY, 'model': MODEL_REGISTRY}


def ours(registry):
    return {name: obj for name, obj in registry._obj_map.items() if obj.__module__.startswith('finpercep_basicsr')}


def test_every_registered_name_has_the_prefix_and_resolves():
    found = {kind: ours(reg) for kind, reg in REGISTRIES.items()}
    assert {'FinPercepRewardNet'} <= set(found['arch'])
    assert {'FinPercepFGRDataset'} <= set(found['dataset'])
    assert {'FinPercepRankLoss'} <= set(found['loss'])
    assert {'FinPercepRMModel'} <= set(found['model'])
    for kind, objs in found.items():
        for name, obj in objs.items():
            assert name.startswith('FinPercep'), f'{kind} {name} lacks the FinPercep prefix'
            assert REGISTRIES[kind].get(name) is obj


def test_each_suffix_file_is_imported_by_its_subpackage_scan():
    for sub, suffix in (('archs', '_arch.py'), ('losses', '_loss.py'), ('models', '_model.py'),
                        ('data', '_dataset.py')):
        folder = os.path.join(REPO, 'finpercep_basicsr', sub)
        for name in os.listdir(folder):
            if name.endswith(suffix):
                assert f'finpercep_basicsr.{sub}.{name[:-3]}' in sys.modules, name


def test_drop_in_files_alone_register_their_subpackage():
    # a fresh interpreter that imports only the drop-in files, the way BasicSR's scan does
    code = ('import importlib.util, os, sys\n'
            'from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY\n'
            f'for sub in ("archs", "losses", "models", "data"):\n'
            f'    folder = os.path.join({REPO!r}, sub)\n'
            '    for n in os.listdir(folder):\n'
            '        spec = importlib.util.spec_from_file_location("dropin_" + n[:-3], os.path.join(folder, n))\n'
            '        spec.loader.exec_module(importlib.util.module_from_spec(spec))\n'
            'print(sorted(k for r in (ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY)\n'
            '             for k in r._obj_map if k.startswith("FinPercep")))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    names = set(eval(out.stdout))
    expected = {name for reg in (ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY) for name in ours(reg)}
    assert names == expected
