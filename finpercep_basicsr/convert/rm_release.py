"""A reward-model release file from a training checkpoint: one weight set, checked against its option file, with
its sha256 (``scripts/export_rm_weights.py``)."""
import os


def export_rm_release(ckpt, opt, out, param_key='params_ema', half=False):
    """Write ``out`` = ``{'params': state}`` and ``out.sha256`` (``sha256sum -c`` format) beside it.

    The chosen weights are loaded strictly into the network of ``opt``'s ``network_reward``, so the
    release fits its option file; the file is written atomically.

    Args:
        ckpt (str): Training checkpoint (``net_reward_*.pth``).
        opt (str): Option file whose ``network_reward`` the release must fit.
        out (str): Release file (.pth).
        param_key (str): Weights to keep (``params_ema``: what validation measured, or ``params``).
        half (bool): Store the floating-point tensors as float16 (half the file; they load into the
            fp32 network unchanged in layout, rounded to 3 significant digits): for a model only scored.

    Returns:
        tuple[str, int]: sha256 hex digest and size in bytes of the written file.

    Raises:
        UserInputError: No ``network_reward.type`` in ``opt``, or a checkpoint that does not fit it.
    """
    from basicsr.utils.registry import ARCH_REGISTRY

    import finpercep_basicsr.archs  # noqa: F401  (registers the arch)
    from finpercep_basicsr.utils.checkpoint import atomic_torch_save, file_sha256, load_state_dict_into
    from finpercep_basicsr.utils.network_options import network_section
    from finpercep_basicsr.utils.option_check import load_option_file
    network = network_section(load_option_file(opt), 'network_reward', opt)
    net = ARCH_REGISTRY.get(network.pop('type'))(**network)
    load_state_dict_into(net, ckpt, param_key=param_key, strict=True, what='reward checkpoint')
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().clone().contiguous()
             for k, v in net.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_torch_save({'params': state}, out)
    digest = file_sha256(out)
    with open(out + '.sha256', 'w') as f:
        f.write(f'{digest}  {os.path.basename(out)}\n')
    return digest, os.path.getsize(out)
