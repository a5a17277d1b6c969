"""ncnn -> BasicSR RRDBNet / SRVGGNetCompact conversion: weight-format decoding, bad files, and parity with ncnn on
a real photo."""
import dataclasses

import numpy as np
import pytest
import torch
from skimage import data

from finpercep_basicsr.convert.ncnn_convert import (TAG_FP16, _load_tagged, convert_ncnn, ncnn_to_basicsr,
                                                    ncnn_to_rrdbnet, parity, parse_ncnn_param, read_conv_weights,
                                                    read_layer_weights)
from finpercep_basicsr.fgr.sources.ncnn_models import PACKAGED_MODELS, NcnnNet, packaged_ncnn_model
from finpercep_basicsr.utils.errors import UserInputError

X4PLUS = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32,
          'scale': 4}
ANIMEVIDEOV3 = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_conv': 16,
                'upscale': 4, 'act_type': 'prelu'}


def test_weight_storage_formats():
    values = np.array([0.5, -1.25, 3.0], np.float32)  # 3 fp16 values = 6 bytes, padded to 8
    fp16 = np.uint32(TAG_FP16).tobytes() + values.astype(np.float16).tobytes() + b'\0\0' + b'tail'
    out, offset = _load_tagged(fp16, 0, 3, 'x')
    np.testing.assert_array_equal(out, values)
    assert offset == 4 + 8
    raw = np.uint32(0).tobytes() + values.tobytes()
    out, offset = _load_tagged(raw, 0, 3, 'x')
    np.testing.assert_array_equal(out, values)
    assert offset == 16
    table = np.linspace(-1, 1, 256).astype(np.float32)
    quantised = bytes([1, 2, 3, 4]) + table.tobytes() + bytes([0, 255, 128, 0])
    out, _ = _load_tagged(quantised, 0, 3, 'x')
    np.testing.assert_array_equal(out, table[[0, 255, 128]])
    with pytest.raises(UserInputError, match='int8'):
        _load_tagged(np.uint32(0x000D4B38).tobytes() + b'\0' * 4, 0, 3, 'x')


def test_packaged_x4plus_layout():
    param, weights, scale = packaged_ncnn_model('realesrgan-x4plus')
    assert scale == 4 and param.endswith('realesrgan-x4plus.param') and weights.endswith('realesrgan-x4plus.bin')
    convs = read_conv_weights(parse_ncnn_param(param), weights)  # consumes the .bin exactly
    assert len(convs) == 1 + 23 * 15 + 5
    assert convs[0][1].shape == (64, 3, 3, 3) and convs[-1][1].shape == (3, 64, 3, 3)


def test_truncated_or_mismatched_files(tmp_path):
    param, weights, _ = packaged_ncnn_model('realesrgan-x4plus')
    with open(weights, 'rb') as f:
        blob = f.read()
    (tmp_path / 'short.bin').write_bytes(blob[:100000])
    with pytest.raises(UserInputError, match='short.bin'):
        ncnn_to_rrdbnet(param, str(tmp_path / 'short.bin'))
    (tmp_path / 'long.bin').write_bytes(blob + b'\0' * 8)
    with pytest.raises(UserInputError, match='bytes left'):
        ncnn_to_rrdbnet(param, str(tmp_path / 'long.bin'))
    (tmp_path / 'bad.param').write_text('not ncnn\n')
    with pytest.raises(UserInputError, match='bad.param'):
        ncnn_to_rrdbnet(str(tmp_path / 'bad.param'), weights)
    with pytest.raises(UserInputError, match='gone.bin'):
        ncnn_to_rrdbnet(param, str(tmp_path / 'gone.bin'))


def test_converted_checkpoint_matches_ncnn_on_a_real_photo(tmp_path):
    """The documented conversion: convert, then compare with ncnn on a 32x32 crop of skimage's astronaut."""
    out = str(tmp_path / 'weights' / 'RealESRGAN_x4plus.pth')
    report = convert_ncnn(out=out)
    print(f'ncnn vs converted RRDBNet max abs diff: {report["parity_max_abs_diff"]:.3g}')
    assert report['network_g'] == X4PLUS and report['param_key'] == 'params_ema'
    assert report['parity_max_abs_diff'] < 2e-3
    # the checkpoint loads strictly into BasicSR's RRDBNet through the registry, as the RLHF issue uses it
    from basicsr.archs import build_network
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'params_ema'}
    net = build_network(dict(X4PLUS))
    net.load_state_dict(ckpt['params_ema'], strict=True)


def test_animevideov3_layout_with_prelu_slopes():
    param, weights, _ = packaged_ncnn_model('realesr-animevideov3-x4')
    layers = read_layer_weights(parse_ncnn_param(param), weights)  # convolutions and PReLU slopes, bin consumed
    kinds = [kind for _, kind, _, _ in layers]
    assert kinds == ['Convolution'] + ['PReLU', 'Convolution'] * 17
    assert layers[1][2].shape == (64,) and layers[-1][2].shape == (48, 64, 3, 3)
    with pytest.raises(UserInputError, match='PReLU'):
        read_conv_weights(parse_ncnn_param(param), weights)  # the RRDB path refuses it rather than misreading


def test_converted_srvggnetcompact_matches_ncnn_on_a_real_photo(tmp_path, one_thread):
    """``--model realesr-animevideov3-x4`` writes a BasicSR SRVGGNetCompact checkpoint equal to ncnn's model."""
    out = str(tmp_path / 'realesr-animevideov3.pth')
    report = convert_ncnn('realesr-animevideov3-x4', out=out)
    assert report['network_g'] == ANIMEVIDEOV3 and report['parity_max_abs_diff'] < 1e-4
    from basicsr.archs import build_network
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    net = build_network(dict(ANIMEVIDEOV3))
    net.load_state_dict(ckpt['params_ema'], strict=True)
    # a second, larger real crop (hair, badge, flag edges), and a differentiable generator
    crop = np.ascontiguousarray(data.astronaut()[60:108, 300:348]).astype(np.float32) / 255.0
    diff, ours = parity(ckpt['params_ema'], report['network_g'], NcnnNet.packaged('realesr-animevideov3-x4'), crop)
    print(f'ncnn vs converted SRVGGNetCompact max abs diff on 48x48: {diff:.3g}')
    assert diff < 1e-4 and ours.shape == (192, 192, 3)
    x = torch.from_numpy(crop.transpose(2, 0, 1).copy())[None]
    net(x).mean().backward()
    assert net.body[0].weight.grad.abs().sum() > 0 and net.body[1].weight.grad.abs().sum() > 0  # conv and PReLU


def test_converted_srvggnetcompact_as_a_basicsr_sr_source(tmp_path):
    from finpercep_basicsr.convert.ncnn_convert import convert_ncnn_checkpoint
    from finpercep_basicsr.fgr.sources import build_sr_source
    param, weights, _ = packaged_ncnn_model('realesr-animevideov3-x4')
    path = str(tmp_path / 'av3.pth')
    arch = convert_ncnn_checkpoint(path, param, weights)
    lq = np.ascontiguousarray(data.astronaut()[120:152, 200:232]).astype(np.float32) / 255.0
    src = build_sr_source({'type': 'basicsr', 'name': 'av3_torch', 'network': arch, 'path': path, 'tile': 16,
                           'tile_pad': 18})
    ncnn_out = build_sr_source({'type': 'ncnn', 'model': 'realesr-animevideov3-x4'})(lq)
    np.testing.assert_allclose(src(lq), ncnn_out, atol=1e-4)  # tiles of 16 with 18 px context are exact too
    prov = src.provenance
    assert prov['type'] == 'basicsr' and prov['network'] == arch and len(prov['checkpoint_sha256']) == 64


@pytest.mark.parametrize('model, message', [('realesr-animevideov3-x2', 'residual add'),
                                            ('waifu2x-photo-x2', 'Deconvolution')])
def test_unconvertible_graphs_are_refused(tmp_path, model, message):
    out = tmp_path / 'x.pth'
    with pytest.raises(UserInputError, match=message):
        convert_ncnn(model, out=str(out))
    assert not out.exists()


def test_missing_wheel_file_is_named(tmp_path, monkeypatch):
    param, weights, _ = packaged_ncnn_model('realesr-animevideov3-x4')
    with pytest.raises(UserInputError, match='not x2'):  # a compact graph states its own scale
        ncnn_to_basicsr(param, weights, scale=2)
    spec = PACKAGED_MODELS['realesr-animevideov3-x4']
    monkeypatch.setitem(PACKAGED_MODELS, 'realesr-animevideov3-x4',
                        dataclasses.replace(spec, param='models/gone.param'))
    with pytest.raises(UserInputError, match='gone.param'):
        convert_ncnn('realesr-animevideov3-x4', out=str(tmp_path / 'x.pth'))
    with pytest.raises(UserInputError, match='give both --param and --bin'):
        convert_ncnn(param='my.param')
