"""pyiqa metrics as a BasicSR metric (``val.metrics.<m>: {type: FinPercepPyIQA, name: lpips}``), offline-safe.

pyiqa 0.1.16 downloads a learned metric's weights the first time it is built; offline that is a
long network traceback. ``check_pyiqa_weights`` instead names each file a metric needs and the
folder pyiqa reads it from, before any image is processed:
- pyiqa's own weights: ``torch.hub.get_dir()/pyiqa/`` (``pyiqa.utils.download_util.DEFAULT_CACHE_DIR``);
- torchvision backbones (LPIPS' AlexNet, DISTS' VGG16): ``torch.hub.get_dir()/checkpoints/``;
- CLIP backbones (CLIP-IQA, LIQE; ``pyiqa.archs.clip_model.load``): ``torch.hub.get_dir()/clip/``.
``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``).
"""
import os

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

# pyiqa name -> (cache sub-folder, file) it loads; the names and files of pyiqa 0.1.16's default configs
PYIQA_WEIGHTS = {
    'lpips': (('pyiqa', 'LPIPS_v0.1_alex-df73285e.pth'), ('checkpoints', 'alexnet-owt-7be5be79.pth')),
    'dists': (('pyiqa', 'DISTS_weights-f5e65c96.pth'), ('checkpoints', 'vgg16-397923af.pth')),
    'musiq': (('pyiqa', 'musiq_koniq_ckpt-e95806b9.pth'),),
    # MANIQA also builds timm's vit_base_patch8_224 with pretrained=True (Hugging Face cache, not checked here)
    'maniqa': (('pyiqa', 'ckpt_koniq10k.pt'),),
    'clipiqa': (('clip', 'RN50.pt'),),
    'liqe': (('pyiqa', 'liqe_koniq.pt'), ('clip', 'ViT-B-32.pt')),
}
# metrics pyiqa computes without any download (DESIGN.md section 3)
WEIGHT_FREE = ('psnr', 'psnry', 'ssim', 'ssimc', 'ms_ssim', 'cw_ssim', 'fsim', 'vif', 'gmsd', 'nlpd', 'mad', 'vsi',
               'piqe')
_METRICS = {}


def _hub_dir():
    return torch.hub.get_dir()


def check_pyiqa_weights(name):
    """Raise naming the first weight file of metric ``name`` that is missing.

    Args:
        name (str): pyiqa metric name (``pyiqa.list_models()``).

    Raises:
        FileNotFoundError: A weight file is missing (the message names it and its folder).
        ValueError: ``name`` is not a metric whose files are known here.
    """
    if name in WEIGHT_FREE:
        return
    if name not in PYIQA_WEIGHTS:
        raise ValueError(f'pyiqa metric {name!r}: its weight files are not known here; use one of '
                             f'{sorted(PYIQA_WEIGHTS) + list(WEIGHT_FREE)}')
    for sub, filename in PYIQA_WEIGHTS[name]:
        path = os.path.join(_hub_dir(), sub, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'pyiqa metric {name} needs {filename} at {path} (pyiqa downloads it there when '
                                 f'online; offline, copy it into {os.path.dirname(path)}, or set TORCH_HOME)')


def is_no_reference(name):
    """Whether pyiqa scores ``name`` on the SR image alone (``metric_mode: NR``)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    if name not in DEFAULT_CONFIGS:
        raise ValueError(f'{name!r} is not a pyiqa metric (see pyiqa.list_models())')
    return DEFAULT_CONFIGS[name]['metric_mode'] == 'NR'


def _to_tensor(img, device):
    """BasicSR's uint8 BGR (H, W, 3) image -> RGB float (1, 3, H, W) in [0, 1]."""
    rgb = np.ascontiguousarray(img[..., ::-1]).astype(np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)


@METRIC_REGISTRY.register()
def FinPercepPyIQA(img, img2=None, name=None, **kwargs):
    """Score ``img`` (and ``img2``, the GT, for full-reference metrics) with pyiqa's metric ``name``.

    Args:
        img (ndarray): SR image, uint8 BGR (H, W, 3), as BasicSR's ``tensor2img`` returns it.
        img2 (ndarray | None): GT image, same layout; None for no-reference metrics.
        name (str): pyiqa metric name. Other keys (``better``) are BasicSR's and ignored.

    Returns:
        float: The score.
    """
    if name is None:
        raise ValueError('FinPercepPyIQA needs name: <pyiqa metric name>')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name not in _METRICS:  # built once per process: the learned ones load large weights
        check_pyiqa_weights(name)
        import pyiqa
        _METRICS[name] = pyiqa.create_metric(name, device=device, as_loss=False)
    if is_no_reference(name):
        args = (_to_tensor(img, device),)
    elif img2 is None:
        raise ValueError(f'pyiqa metric {name} compares with the GT; this dataset has none')
    else:
        args = (_to_tensor(img, device), _to_tensor(img2, device))
    with torch.no_grad():
        return float(_METRICS[name](*args).mean())
