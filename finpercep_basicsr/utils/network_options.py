"""The network sections of option files (``network_g``, ``network_reward``), checked before a network is built."""
from copy import deepcopy

from finpercep_basicsr.utils.errors import UserInputError


def network_section(opt, key, source):
    """A copy of ``opt[key]`` that names an arch ``type`` (the caller may pop it without changing ``opt``).

    Args:
        opt (dict): Loaded options.
        key (str): Section, e.g. ``network_g`` or ``network_reward``.
        source (str): Where ``opt`` came from (the option file), for the error message.

    Raises:
        UserInputError: The section is missing or has no ``type``.
    """
    network = opt.get(key)
    if not isinstance(network, dict) or 'type' not in network:
        raise UserInputError(f'{source}: no {key}.type (the {key} section must name its arch)')
    return deepcopy(network)
