"""Test-time presets of the diffusion policies (``network_g.inference``): the released samplers on tiny models."""
import pytest
import torch
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder
from tests.helpers.stablesr import ENCODER_OPT, make_stablesr_sd

import finpercep_basicsr.archs  # noqa: F401
from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
from finpercep_basicsr.archs.sr_inference import adain_colour_fix, wavelet_colour_fix
from finpercep_basicsr.archs.stablesr_arch import FinPercepStableSRGenerator
from finpercep_basicsr.utils.errors import UserInputError

pytestmark = pytest.mark.usefixtures('one_thread')
RELEASED = {'preset': 'released'}


@pytest.fixture(scope='module')
def sd(tmp_path_factory):
    return make_sd_folder(str(tmp_path_factory.mktemp('sd') / 'sd'))


def _count_predictions(gen):
    """Wrap ``gen.predict`` to count UNet predictions and record the guidance scale each one used."""
    calls = []
    predict = gen.predict

    def counted(z, t, cond):
        calls.append((t, getattr(gen, 'guidance_scale', None), getattr(gen, 'cfw_weight', None)))
        return predict(z, t, cond)
    gen.predict = counted
    return calls


def _in_range(sr, shape):
    return sr.shape == shape and torch.isfinite(sr).all() and 0 <= sr.min() and sr.max() <= 1


def test_osediff_released_is_one_step_with_posterior_sample_and_adain(sd):
    torch.manual_seed(0)
    gen = FinPercepOSEDiffGenerator(sd, prompt='a photo', inference=RELEASED).eval()
    lq = torch.rand(2, 3, 8, 8)
    torch.manual_seed(1)
    first = gen.infer(lq)
    torch.manual_seed(2)
    second = gen.infer(lq)
    assert _in_range(first, (2, 3, 32, 32))
    assert not torch.allclose(first, second)  # the LQ latent is drawn from the posterior, as released
    assert gen.vae_sample is False  # the preset's knobs hold during infer only
    plain = gen.sample_no_grad(lq)  # the training path: posterior mode, no colour fix, deterministic
    assert torch.equal(plain, gen.sample_no_grad(lq))
    up = torch.nn.functional.interpolate(lq, size=(32, 32), mode='bicubic', align_corners=False).clamp(0, 1)
    assert torch.allclose(first.mean((2, 3)), up.mean((2, 3)), atol=0.05)  # adain: the LQ's colours


def test_seesr_released_runs_50_guided_ddpm_steps_from_the_noised_lq(sd, tmp_path):
    seesr = make_seesr_folder(str(tmp_path / 'seesr'))
    gen = FinPercepSeeSRGenerator(sd, seesr, num_steps=2, prompt='a photo', inference=RELEASED,
                                  allow_no_tagger=True).eval()
    assert gen.guidance_scale == 1.0 and gen.negative is not None  # training unguided; the preset's CFG ready
    calls = _count_predictions(gen)
    sr = gen.infer(torch.rand(1, 3, 8, 8))
    assert _in_range(sr, (1, 3, 32, 32))
    assert len(calls) == 50 and {c[1] for c in calls} == {5.5}
    assert gen.guidance_scale == 1.0
    calls.clear()
    gen.sample_no_grad(torch.rand(1, 3, 8, 8))
    assert len(calls) == 2 and {c[1] for c in calls} == {1.0}  # the training rollout is untouched


def test_stablesr_released_runs_200_ddpm_steps_with_cfw_and_wavelet(tmp_path):
    sd = make_stablesr_sd(str(tmp_path / 'sd'))
    gen = FinPercepStableSRGenerator(sd, num_steps=2, encoder_opt=ENCODER_OPT, prompt='a photo', cfw_weight=0.0,
                                     inference={'preset': 'released', 'colour_fix': 'wavelet'}).eval()
    assert gen.inference['num_steps'] == 200 and gen.inference['cfw_weight'] == 0.5
    calls = _count_predictions(gen)
    sr = gen.infer(torch.rand(1, 3, 8, 8))
    assert _in_range(sr, (1, 3, 32, 32))
    assert len(calls) == 200 and {c[2] for c in calls} == {0.5} and calls[0][0] > calls[-1][0]
    assert gen.cfw_weight == 0.0


def test_training_preset_keeps_the_training_sampler(sd):
    torch.manual_seed(0)
    gen = FinPercepOSEDiffGenerator(sd, prompt='a photo', inference={'preset': 'training'})
    lq = torch.rand(1, 3, 8, 8)
    assert gen.inference is None and torch.equal(gen.infer(lq), gen.sample_no_grad(lq))


@pytest.mark.parametrize('inference, message', [
    ({'preset': 'fast'}, 'training or released'),
    ({'preset': 'released', 'steps': 3}, 'unknown keys'),
    ({'preset': 'released', 'colour_fix': 'histogram'}, 'colour_fix'),
    ({'preset': 'released', 'sampler': 'euler'}, 'sampler'),
    ({'num_steps': 3}, 'need preset: released'),
    ({'preset': 'released', 'guidance_scale': 3.0}, 'unknown keys'),  # SeeSR's knob, not OSEDiff's
])
def test_inference_option_errors_name_the_key(sd, inference, message):
    with pytest.raises(UserInputError, match=message):
        FinPercepOSEDiffGenerator(sd, inference=inference)


def test_colour_fixes_take_the_colour_of_the_reference():
    torch.manual_seed(0)
    sr, ref = torch.rand(1, 3, 64, 64) * 0.5, torch.rand(1, 3, 64, 64) * 0.2 + 0.6
    fixed = adain_colour_fix(sr, ref)
    assert torch.allclose(fixed.mean((2, 3)), ref.mean((2, 3)), atol=1e-3)
    flat = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(wavelet_colour_fix(flat, torch.full_like(flat, 0.7)), torch.full_like(flat, 0.7))
    detail = wavelet_colour_fix(sr, torch.full_like(sr, 0.7))  # detail of sr, colour of the reference
    assert abs(detail.mean().item() - 0.7) < 0.02 and detail.std() > 0.05
