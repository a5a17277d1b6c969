"""ncnn -> BasicSR RRDBNet conversion: weight-format decoding, bad files, and parity with ncnn on a real photo."""
import json

import numpy as np
import pytest
import torch
from opt_fixture import load_script

from finpercep_basicsr.fgr.ncnn_convert import (TAG_FP16, _load_tagged, ncnn_to_rrdbnet, parse_ncnn_param,
                                                read_conv_weights)
from finpercep_basicsr.fgr.ncnn_models import packaged_ncnn_model
from finpercep_basicsr.utils.errors import UserInputError

X4PLUS = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32,
          'scale': 4}


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


def test_converted_checkpoint_matches_ncnn_on_a_real_photo(tmp_path, capsys):
    """The documented command: convert, then compare with ncnn on a 32x32 crop of skimage's astronaut."""
    out = str(tmp_path / 'weights' / 'RealESRGAN_x4plus.pth')
    assert load_script('convert_ncnn_to_basicsr').main(['--out', out]) == 0
    report = json.loads(capsys.readouterr().out)
    print(f'ncnn vs converted RRDBNet max abs diff: {report["parity_max_abs_diff"]:.3g}')
    assert report['network_g'] == X4PLUS and report['param_key'] == 'params_ema'
    assert report['parity_max_abs_diff'] < 2e-3
    # the checkpoint loads strictly into BasicSR's RRDBNet through the registry, as the RLHF issue uses it
    import finpercep_basicsr  # noqa: F401
    from basicsr.archs import build_network
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'params_ema'}
    net = build_network(dict(X4PLUS))
    net.load_state_dict(ckpt['params_ema'], strict=True)
