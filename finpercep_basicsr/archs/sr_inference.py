"""Test-time inference presets of the diffusion SR policies: the samplers the releases publish.

Training (ReFL, GRPO, DPO) samples with a few DDIM steps from the VAE posterior's mode and no colour
fix (``DiffusionPolicy.sample``). Validation and testing can instead reproduce each release's own
inference (``network_g.inference: {preset: released}``): its sampler and step count, its guidance,
posterior sampling of the LQ latent and its colour fix. Each policy class states its release's
settings in ``RELEASED_INFERENCE`` (with the source of each fact); option keys override them.
"""
import torch
import torch.nn.functional as F

from finpercep_basicsr.utils.errors import UserInputError

SAMPLERS = ('ddpm', 'ddim')
COLOUR_FIXES = ('adain', 'wavelet', 'none')
# the keys a preset may set; policy-specific knobs (guidance_scale, cfw_weight) are policy attributes
PRESET_KEYS = ('sampler', 'num_steps', 'start_point', 'start_timestep', 'colour_fix', 'vae_sample', 'eta')


def resolve_inference(inference, released, policy_attrs):
    """Merge ``network_g.inference`` with the class's released settings.

    Args:
        inference (dict | None): ``{preset: training | released, <key>: value, ...}``; None or
            ``preset: training`` keeps the training sampler for testing too.
        released (dict): The class's ``RELEASED_INFERENCE``.
        policy_attrs (tuple[str]): Policy attributes a preset may override (e.g. ``guidance_scale``).

    Returns:
        dict | None: The settings, or None for the training sampler.
    """
    opt = dict(inference or {})
    preset = opt.pop('preset', 'training')
    if preset not in ('training', 'released'):
        raise UserInputError(f'network_g.inference.preset must be training or released, got {preset!r}')
    unknown = sorted(set(opt) - set(PRESET_KEYS) - set(policy_attrs))
    if unknown:
        raise UserInputError(f'network_g.inference: unknown keys {unknown} (known: '
                             f'{sorted(PRESET_KEYS + tuple(policy_attrs))})')
    if preset == 'training':
        if opt:
            raise UserInputError(f'network_g.inference: {sorted(opt)} need preset: released')
        return None
    settings = {**released, **opt}
    if settings.get('sampler') not in (None,) + SAMPLERS:
        raise UserInputError(f'network_g.inference.sampler must be one of {SAMPLERS}, got {settings["sampler"]!r}')
    if settings.get('colour_fix', 'none') not in COLOUR_FIXES:
        raise UserInputError(f'network_g.inference.colour_fix must be one of {COLOUR_FIXES}, '
                             f'got {settings["colour_fix"]!r}')
    return settings


def build_scheduler(sampler, scheduler_config, num_steps):
    """A diffusers scheduler of the SD base's noise schedule with ``num_steps`` inference steps.

    ``ddpm`` is ancestral sampling on the respaced schedule (SeeSR's pipeline steps the
    ``DDPMScheduler`` it loads from the SD folder; StableSR's DDPM sampler respaces 1000 steps to
    ``--ddpm_steps``); ``ddim`` is the deterministic DDIM sampler (eta = 0 unless the preset says).
    """
    from diffusers import DDIMScheduler, DDPMScheduler
    cls = DDPMScheduler if sampler == 'ddpm' else DDIMScheduler
    scheduler = cls.from_config(scheduler_config)
    scheduler.set_timesteps(int(num_steps))
    return scheduler


def adain_colour_fix(sr, ref, eps=1e-5):
    """Per-image, per-channel mean and std of ``sr`` matched to ``ref`` (both (B, 3, H, W) in [0, 1])."""
    s_mean, s_std = sr.mean((2, 3), keepdim=True), sr.std((2, 3), keepdim=True) + eps
    r_mean, r_std = ref.mean((2, 3), keepdim=True), ref.std((2, 3), keepdim=True) + eps
    return ((sr - s_mean) / s_std * r_std + r_mean).clamp(0, 1)


def _wavelet_split(img, levels=5):
    """(high, low) frequencies: a stack of dilated 3x3 binomial blurs (a trous wavelet), replicate padding."""
    kernel = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]], device=img.device, dtype=img.dtype) / 16
    kernel = kernel[None, None].repeat(img.size(1), 1, 1, 1)
    high, low = torch.zeros_like(img), img
    for i in range(levels):
        radius = 2 ** i
        blurred = F.conv2d(F.pad(low, (radius,) * 4, mode='replicate'), kernel, dilation=radius, groups=img.size(1))
        high, low = high + (low - blurred), blurred
    return high, low


def wavelet_colour_fix(sr, ref):
    """High frequencies of ``sr`` over the low frequencies (colour, tone) of ``ref``."""
    return (_wavelet_split(sr)[0] + _wavelet_split(ref)[1]).clamp(0, 1)


def colour_fix(sr, ref, method):
    """Apply ``method`` (adain | wavelet | none); ``ref`` is the bicubic-upsampled LQ, as in the releases."""
    if method in (None, 'none'):
        return sr
    return (adain_colour_fix if method == 'adain' else wavelet_colour_fix)(sr.float(), ref.float())


def released_loop(policy, cond, settings):
    """The release's sampler over ``policy.predict``: start latent, scheduler steps, final latent.

    Args:
        policy (DiffusionPolicy): Provides ``predict(z, t, cond)`` and ``scheduler_config``.
        cond (dict): ``policy.prepare(lq)``; ``cond['z_lq']`` is the LQ latent.
        settings (dict): Resolved preset (``sampler``, ``num_steps``, ``start_point``, ``start_timestep``, ``eta``).

    Returns:
        Tensor: The final latent (B, C, h, w).
    """
    scheduler = build_scheduler(settings['sampler'], policy.scheduler_config, settings['num_steps'])
    z_lq = cond['z_lq']
    noise = torch.randn_like(z_lq)
    if settings.get('start_point', 'noise') == 'lr':
        # the LQ latent noised to start_timestep (SeeSR: 999, whatever the first inference timestep)
        start = torch.full((z_lq.size(0),), int(settings.get('start_timestep', 999)), dtype=torch.long)
        z = scheduler.add_noise(z_lq, noise, start.to(z_lq.device))
    else:
        z = noise * scheduler.init_noise_sigma
    step_kwargs = {'eta': float(settings['eta'])} if settings['sampler'] == 'ddim' else {}
    for t in scheduler.timesteps:
        out = policy.predict(scheduler.scale_model_input(z, t), int(t), cond).float()
        z = scheduler.step(out, t, z, **step_kwargs).prev_sample
    return z


class InferencePresets:
    """Mixin of ``DiffusionPolicy``: ``network_g.inference`` and the test-time entry ``infer``.

    Subclasses set ``RELEASED_INFERENCE`` (their release's settings), ``INFERENCE_ATTRS`` (their own
    attributes a preset may set, e.g. ``guidance_scale``), ``scheduler_config`` (the SD base's
    scheduler config) and read ``self.vae_sample`` when encoding the LQ. Validation and testing call
    ``infer``; training calls ``sample``/``sample_trajectory``, which never read the preset.
    """
    RELEASED_INFERENCE = {}
    INFERENCE_ATTRS = ()
    inference = None
    vae_sample = False  # prepare() encodes the LQ with the posterior's mode unless a preset samples it

    def configure_inference(self, inference):
        """Resolve ``network_g.inference`` (``resolve_inference``) into ``self.inference``."""
        self.inference = resolve_inference(inference, self.RELEASED_INFERENCE, self.INFERENCE_ATTRS)

    @torch.no_grad()
    def infer(self, lq):
        """Test-time SR (B, 3, sH, sW) of ``lq`` in [0, 1]: the preset, or ``sample`` without one."""
        settings = self.inference
        if settings is None:
            return self.sample(lq, grad_steps=0)
        saved = {k: getattr(self, k) for k in tuple(self.INFERENCE_ATTRS) + ('vae_sample',)}
        try:  # the preset's knobs hold for this call only: a later training step sees its own settings
            for k in saved:
                setattr(self, k, settings.get(k, saved[k]))
            with self.autocast():
                if settings.get('sampler') is None:  # one-step policies keep their own single step
                    sr = self.sample(lq, grad_steps=0)
                else:
                    cond = self.prepare(lq)
                    sr = self.decode(released_loop(self, cond, settings), cond)
        finally:
            for k, v in saved.items():
                setattr(self, k, v)
        # the colour reference of all three releases: the LQ bicubic-upsampled to the SR size
        ref = F.interpolate(lq, size=sr.shape[-2:], mode='bicubic', align_corners=False).clamp(0, 1)
        return colour_fix(sr, ref, settings.get('colour_fix'))
