"""Convert packaged ncnn SR models into BasicSR checkpoints of real, differentiable generators.

- ESRGAN-style graphs (Real-ESRGAN x4plus / x4plus-anime, RealSR DF2K) -> BasicSR ``RRDBNet``;
- realesr-animevideov3-x4 -> BasicSR ``SRVGGNetCompact`` (``basicsr.archs.srvgg_arch``).

    python scripts/convert_ncnn_to_basicsr.py --out weights/RealESRGAN_x4plus.pth
    python scripts/convert_ncnn_to_basicsr.py --model realesr-animevideov3-x4

ncnn storage (read from ncnn's ``src/modelbin.cpp`` and ``src/layer/convolution.cpp``): the ``.bin``
is the concatenation, in ``.param`` layer order, of each weighted layer's blobs. A Convolution
stores its weights as ``load(weight_data_size, type=0)``: a 4-byte tag, then
- tag ``0x01306B47``: float16 values, padded to a multiple of 4 bytes;
- tag ``0x0002C056`` or all-zero tag: raw float32 values;
- tag ``0x000D4B38``: int8 values (needs int8 scales: not supported here);
- any other non-zero tag: a 256-entry float32 table, then uint8 indices padded to 4 bytes;
and then, if ``bias_term``, ``num_output`` raw float32 biases (``type=1``, no tag). Weights are laid
out (out, in, kh, kw) as in PyTorch. A PReLU stores ``num_slope`` raw float32 slopes (``type=1``,
``src/layer/prelu.cpp``). The ESRGAN graph holds only Convolution layers with weights; their order
equals the registration order of ``RRDBNet``'s ``nn.Conv2d`` modules (conv_first, 23x3x5 RDB convs,
conv_body, conv_up1, conv_up2, conv_hr, conv_last), checked by shape.

The animevideov3 graph is Conv, (PReLU, Conv) x 17, PixelShuffle(4), plus a nearest Interp x4 of the
input (``Interp 0=1``): exactly ``SRVGGNetCompact(num_conv=16, upscale=4, act_type='prelu')``, whose
``body`` list interleaves the same convolutions and PReLUs. Its x2/x3 graphs are the same weights
followed by a bicubic resize, which SRVGGNetCompact cannot express: they are refused.
"""
import functools
import os

import numpy as np
import torch

from finpercep_basicsr.fgr.sources.ncnn_models import check_model_file
from finpercep_basicsr.utils.errors import UserInputError

TAG_FP16, TAG_FP32_SCALED, TAG_INT8 = 0x01306B47, 0x0002C056, 0x000D4B38
# layer types that carry no weights in the .bin (anything else is refused rather than misread)
WEIGHTLESS = {'Input', 'Split', 'Concat', 'Eltwise', 'BinaryOp', 'Interp', 'ReLU', 'Crop', 'PixelShuffle', 'Reshape',
              'Noop'}


def parse_ncnn_param(path):
    """Parse an ncnn ``.param`` text file.

    Returns:
        list[dict]: per layer ``type``, ``name``, ``inputs``, ``outputs`` and ``params`` ({int key: str value};
        array values keep their ``-233xx`` key and the raw comma-separated text).
    """
    check_model_file(path, 'ncnn param file')
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    if not lines or lines[0] != ['7767517']:
        raise UserInputError(f'{path} is not an ncnn param file (magic 7767517 missing)')
    layer_count = int(lines[1][0])
    layers = []
    for tokens in lines[2:2 + layer_count]:
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        inputs, outputs = tokens[4:4 + n_in], tokens[4 + n_in:4 + n_in + n_out]
        params = {}
        for item in tokens[4 + n_in + n_out:]:
            key, value = item.split('=', 1)
            params[int(key)] = value
        layers.append(dict(type=kind, name=name, inputs=inputs, outputs=outputs, params=params))
    if len(layers) != layer_count:
        raise UserInputError(f'{path}: header says {layer_count} layers, found {len(layers)}')
    return layers


def _align4(nbytes):
    return (nbytes + 3) // 4 * 4


def _load_tagged(buf, offset, count, path):
    """ncnn ``ModelBin::load(count, 0)``: returns (float32 array, new offset)."""
    tag = int(np.frombuffer(buf, np.uint32, 1, offset)[0])
    flag_bytes = buf[offset:offset + 4]
    offset += 4
    if tag == TAG_FP16:
        values = np.frombuffer(buf, np.float16, count, offset).astype(np.float32)
        return values, offset + _align4(count * 2)
    if tag == TAG_INT8:
        raise UserInputError(f'{path}: int8-quantised ncnn weights are not supported')
    if tag == TAG_FP32_SCALED or sum(flag_bytes) == 0:
        return np.frombuffer(buf, np.float32, count, offset).copy(), offset + count * 4
    table = np.frombuffer(buf, np.float32, 256, offset)
    offset += 256 * 4
    index = np.frombuffer(buf, np.uint8, count, offset)
    return table[index].astype(np.float32), offset + _align4(count)


def read_layer_weights(layers, bin_path):
    """Read the weights of every Convolution and PReLU from the ``.bin``, in graph order.

    Returns:
        list[tuple]: ``(name, 'Convolution', weight (out, in, kh, kw), bias (out,) or None)`` or
        ``(name, 'PReLU', slopes (num_slope,), None)``.

    Raises:
        UserInputError: A weighted layer type this reader does not know, a truncated file, or bytes left over.
    """
    check_model_file(bin_path, 'ncnn bin file')
    with open(bin_path, 'rb') as f:
        buf = f.read()
    weights, offset = [], 0
    for layer in layers:
        if layer['type'] in WEIGHTLESS:
            continue
        if layer['type'] == 'PReLU':
            count = int(layer['params'].get(0, 1))
            if offset + count * 4 > len(buf):
                raise UserInputError(f'{bin_path} is truncated (at layer {layer["name"]})')
            weights.append((layer['name'], 'PReLU', np.frombuffer(buf, np.float32, count, offset).copy(), None))
            offset += count * 4
            continue
        if layer['type'] != 'Convolution':
            raise UserInputError(f'{bin_path}: layer {layer["name"]} of type {layer["type"]} is not supported')
        p = layer['params']
        if int(p.get(8, 0)):
            raise UserInputError(f'{bin_path}: layer {layer["name"]} is int8-quantised (not supported)')
        out_ch, kw = int(p.get(0, 0)), int(p.get(1, 0))
        kh, size = int(p.get(11, kw)), int(p.get(6, 0))
        in_ch = size // (out_ch * kh * kw)
        if in_ch * out_ch * kh * kw != size:
            raise UserInputError(f'{bin_path}: layer {layer["name"]} weight size {size} does not factor')
        try:
            weight, offset = _load_tagged(buf, offset, size, bin_path)
            bias = None
            if int(p.get(5, 0)):
                bias = np.frombuffer(buf, np.float32, out_ch, offset).copy()
                offset += out_ch * 4
        except ValueError as err:  # np.frombuffer past the end
            raise UserInputError(f'{bin_path} is truncated (at layer {layer["name"]})') from err
        weights.append((layer['name'], 'Convolution', weight.reshape(out_ch, in_ch, kh, kw), bias))
    if offset != len(buf):
        raise UserInputError(f'{bin_path}: {len(buf) - offset} bytes left after the last layer (param/bin mismatch)')
    return weights


def read_conv_weights(layers, bin_path):
    """Every Convolution's ``(name, weight (out, in, kh, kw), bias (out,) or None)``; refuses other weights."""
    weights = read_layer_weights(layers, bin_path)
    for name, kind, _, _ in weights:
        if kind != 'Convolution':
            raise UserInputError(f'{bin_path}: layer {name} of type {kind} is not supported in an ESRGAN graph')
    return [(name, weight, bias) for name, _, weight, bias in weights]


def rrdbnet_options(convs, scale=4):
    """BasicSR ``RRDBNet`` options inferred from the ESRGAN conv list (1 + 15 * num_block + 5 convs)."""
    num_block = (len(convs) - 6) // 15
    if num_block < 1 or 6 + 15 * num_block != len(convs):
        raise UserInputError(f'{len(convs)} convolutions do not form an ESRGAN RRDBNet (1 + 15*n + 5)')
    return dict(type='RRDBNet', num_in_ch=int(convs[0][1].shape[1]), num_out_ch=int(convs[-1][1].shape[0]),
                num_feat=int(convs[0][1].shape[0]), num_block=num_block, num_grow_ch=int(convs[1][1].shape[0]),
                scale=scale)


def srvgg_options(layers, weights, path, scale=None):
    """BasicSR ``SRVGGNetCompact`` options of an ncnn compact graph, after checking it is exactly that net.

    Args:
        layers (list): ``parse_ncnn_param`` output. weights (list): ``read_layer_weights`` output.
        path (str): The param file, for messages. scale (int | None): Expected upscale, if known.
    """
    kinds = [kind for _, kind, _, _ in weights]
    convs = [w for _, kind, w, _ in weights if kind == 'Convolution']
    if len(convs) < 2 or kinds != ['Convolution'] + ['PReLU', 'Convolution'] * (len(convs) - 1):
        raise UserInputError(f'{path}: not a compact (Conv, PReLU, ..., Conv) graph')
    num_in, num_feat = int(convs[0].shape[1]), int(convs[0].shape[0])
    upscale = int(round(np.sqrt(convs[-1].shape[0] / num_in)))
    shuffles = [layer for layer in layers if layer['type'] == 'PixelShuffle']
    interps = [layer for layer in layers if layer['type'] == 'Interp']
    last = layers[-1]
    if last['type'] != 'BinaryOp' or int(last['params'].get(0, 0)) != 0 or len(interps) != 1:
        raise UserInputError(f'{path}: the graph does not end in the residual add (a resize after it, as in the '
                             'animevideov3 x2/x3 files?): convert realesr-animevideov3-x4 instead')
    interp = interps[0]['params']
    factors = {float(interp.get(1, 1)), float(interp.get(2, 1))}
    if int(interp.get(0, 0)) != 1 or factors != {float(upscale)}:  # SRVGGNetCompact's base: nearest x upscale
        raise UserInputError(f'{path}: the residual base is not a nearest x{upscale} upsample of the input')
    if len(shuffles) != 1 or int(shuffles[0]['params'].get(0, 1)) != upscale or upscale * upscale * num_in != \
            convs[-1].shape[0]:
        raise UserInputError(f'{path}: last convolution / PixelShuffle do not give an x{upscale} RGB output')
    if any(w.shape != (num_feat,) for _, kind, w, _ in weights if kind == 'PReLU'):
        raise UserInputError(f'{path}: PReLU slopes are not per channel ({num_feat})')
    if scale is not None and int(scale) != upscale:
        raise UserInputError(f'{path}: the graph upscales x{upscale}, not x{scale}')
    return dict(type='SRVGGNetCompact', num_in_ch=num_in, num_out_ch=num_in, num_feat=num_feat,
                num_conv=len(convs) - 2, upscale=upscale, act_type='prelu')


def build_arch(arch):
    """The BasicSR network of converted options (``RRDBNet`` or ``SRVGGNetCompact``), on the CPU."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    classes = {'RRDBNet': RRDBNet, 'SRVGGNetCompact': SRVGGNetCompact}
    return classes[arch['type']](**{k: v for k, v in arch.items() if k != 'type'})


def _state_dict(arch, weights, path):
    """Fill the network's Conv2d / PReLU modules, in registration order, with the ncnn weights in graph order."""
    net = build_arch(arch)
    modules = [(n, m) for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.PReLU))]
    if len(modules) != len(weights):
        raise UserInputError(f'{path}: {len(weights)} weighted layers, {arch["type"]}{arch} has {len(modules)}')
    state = {}
    for (mod_name, module), (layer, kind, weight, bias) in zip(modules, weights):
        fits = tuple(module.weight.shape) == weight.shape and (bias is None) == (getattr(module, 'bias', None) is None)
        if not fits or kind != type(module).__name__.replace('Conv2d', 'Convolution'):
            raise UserInputError(f'{path}: layer {layer} ({kind} {weight.shape}) does not fit {mod_name} '
                                 f'({type(module).__name__} {tuple(module.weight.shape)})')
        state[f'{mod_name}.weight'] = torch.from_numpy(np.ascontiguousarray(weight))
        if bias is not None:
            state[f'{mod_name}.bias'] = torch.from_numpy(bias)
    net.load_state_dict(state, strict=True)  # every parameter covered, nothing extra
    return state


def ncnn_to_basicsr(param_path, bin_path, scale=None):
    """Convert an ncnn model to a BasicSR state dict: PReLU graphs -> SRVGGNetCompact, else RRDBNet.

    Args:
        scale (int | None): Upscale of an ESRGAN graph (default 4; ncnn's graph does not state it); checked
            against a compact graph's own.

    Returns:
        tuple: (state_dict {str: Tensor}, network options dict usable as ``network_g``).
    """
    layers = parse_ncnn_param(param_path)
    weights = read_layer_weights(layers, bin_path)
    if any(kind == 'PReLU' for _, kind, _, _ in weights):
        arch = srvgg_options(layers, weights, param_path, scale)
    else:
        arch = rrdbnet_options([(name, w, b) for name, _, w, b in weights], scale or 4)
    return _state_dict(arch, weights, param_path), arch


def ncnn_to_rrdbnet(param_path, bin_path, scale=4):
    """Convert an ncnn ESRGAN model to a BasicSR ``RRDBNet`` state dict; returns (state_dict, options)."""
    convs = read_conv_weights(parse_ncnn_param(param_path), bin_path)
    arch = rrdbnet_options(convs, scale)
    return _state_dict(arch, [(name, 'Convolution', w, b) for name, w, b in convs], param_path), arch


def convert_ncnn_checkpoint(out_path, param_path, bin_path, scale=None):
    """Write ``{'params_ema': state_dict}`` for BasicSR (atomic save); returns the network options."""
    from finpercep_basicsr.utils.checkpoint import atomic_torch_save
    state, arch = ncnn_to_basicsr(param_path, bin_path, scale)
    atomic_torch_save({'params_ema': state}, out_path)
    return arch


def parity(state, arch, ncnn_net, img):
    """Max abs difference between the converted PyTorch net and ncnn on one RGB image in [0, 1].

    Args:
        state (dict): Converted state dict. arch (dict): its network options (``type`` included).
        ncnn_net (callable): ``NcnnNet`` of the same model.
        img (np.ndarray): float32 RGB (H, W, 3) in [0, 1].

    Returns:
        tuple: (max abs diff of the outputs clipped to [0, 1], PyTorch output (H*s, W*s, 3)).
    """
    net = build_arch(arch)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float())
    ours = np.clip(out[0].numpy().transpose(1, 2, 0), 0, 1)
    theirs = np.clip(ncnn_net(img), 0, 1)
    return float(np.abs(ours - theirs).max()), ours


def default_out_path(model):
    """Suggested checkpoint name for a packaged model, e.g. ``weights/RealESRGAN_x4plus.pth``."""
    names = {'realesrgan-x4plus': 'RealESRGAN_x4plus.pth', 'realesrgan-x4plus-anime': 'RealESRGAN_x4plus_anime_6B.pth',
             'realsr-df2k-x4': 'RealSR_DF2K_x4.pth', 'realesr-animevideov3-x4': 'realesr-animevideov3.pth'}
    return os.path.join('weights', names.get(model, model + '.pth'))


def check_parity(out_path, ncnn_net, arch):
    """Max abs difference between the saved checkpoint and ncnn on a 32x32 crop of scikit-image's astronaut."""
    from skimage import data

    from finpercep_basicsr.utils.checkpoint import load_checkpoint
    crop = data.astronaut()[100:132, 200:232].astype(np.float32) / 255.0
    state = load_checkpoint(out_path, 'converted checkpoint')['params_ema']
    return parity(state, arch, ncnn_net, crop)[0]


def convert_ncnn(model='realesrgan-x4plus', param=None, bin_path=None, scale=None, out=None, check=True):
    """Convert a packaged ncnn model (or your own ``param``/``bin_path`` pair) into a BasicSR checkpoint.

    Args:
        model (str): Packaged model name (ignored when ``param``/``bin_path`` are given).
        param, bin_path (str | None): ncnn files of your own ESRGAN-style or compact model.
        scale (int | None): Upscaling factor of an ESRGAN-style graph (default 4; compact graphs state their own).
        out (str | None): Checkpoint to write (default: ``default_out_path(model)``, or
            ``weights/<param name>.pth`` for your own files).
        check (bool): Compare the converted net with ncnn on a real photo crop (``check_parity``).

    Returns:
        dict: ``checkpoint``, ``param_key``, ``network_g``, ``source`` and, with ``check``,
        ``parity_max_abs_diff`` (in [0, 1]).

    Raises:
        UserInputError: Only one of ``param``/``bin_path``, a missing model file, or a graph that
            cannot be converted.
    """
    from finpercep_basicsr.fgr.sources.ncnn_models import NcnnNet, packaged_ncnn_model
    if param or bin_path:
        if not (param and bin_path):
            raise UserInputError('give both --param and --bin')
        out = out or os.path.join('weights', os.path.splitext(os.path.basename(param))[0] + '.pth')
        make_net = functools.partial(NcnnNet, param, bin_path)  # ncnn loads the net only when it is checked
    else:
        param, bin_path, scale = packaged_ncnn_model(model)
        out = out or default_out_path(model)
        make_net = functools.partial(NcnnNet.packaged, model)
    arch = convert_ncnn_checkpoint(out, param, bin_path, scale)
    report = {'checkpoint': out, 'param_key': 'params_ema', 'network_g': arch, 'source': [param, bin_path]}
    if check:
        report['parity_max_abs_diff'] = check_parity(out, make_net(), arch)
    return report
