"""Derive option files from templates: load YAML, set dotted keys, write with a header comment."""
import itertools
import os
from copy import deepcopy

import yaml

from finpercep_basicsr.utils.errors import UserInputError


def deep_merge(base, override):
    """``base`` updated by ``override``, recursing into nested dicts (neither input is modified)."""
    out = deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = deepcopy(value)
    return out


def set_dotted(opt, dotted, value):
    """Set ``opt['a']['b']['c'] = value`` for ``dotted='a.b.c'``, creating missing mappings.

    A numeric part indexes a list (``train.ccl.stages.1.start_iter``). ``value`` is copied: a later
    dotted key below it must not change the caller's object (several files derived from one dict).
    """
    value = deepcopy(value)
    *parents, leaf = dotted.split('.')
    node = opt
    for key in parents:
        if isinstance(node, list):
            node = node[int(key)]
        else:
            node = node.setdefault(key, {})
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value


def derive_options(template, out_path, overrides, header=''):
    """Write ``template`` (a YAML path or a dict) to ``out_path`` with ``overrides`` applied.

    Args:
        template (str | dict): Option file to start from.
        out_path (str): Where to write.
        overrides (dict): {dotted key: value}.
        header (str): Comment lines put at the top (why and from what the file was made).

    Returns:
        dict: The written options.
    """
    if isinstance(template, str):
        if not os.path.isfile(template):
            raise UserInputError(f'option template not found: {template}')
        with open(template) as f:
            opt = yaml.safe_load(f)
    else:
        opt = template
    for dotted, value in overrides.items():
        set_dotted(opt, dotted, value)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + '.tmp'  # written beside, then renamed: a killed run never leaves half an option file
    with open(tmp, 'w') as f:
        f.write(''.join(f'# {line}\n' for line in header.splitlines()))
        yaml.safe_dump(opt, f, sort_keys=False)
    os.replace(tmp, out_path)
    return opt


def read_header(path):
    """The comment lines at the top of an option file written by ``derive_options``, as its ``header``."""
    with open(path) as f:
        lines = itertools.takewhile(lambda line: line.startswith('#'), f.read().splitlines())
        return '\n'.join(line[2:] if line.startswith('# ') else line[1:] for line in lines)
