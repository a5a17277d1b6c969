"""Peak memory and time of one RLHF step of a diffusion policy, for precision x checkpointing x VAE tiling.

    python scripts/bench_diffusion_memory.py --policy osediff --preset small --size 256
    python scripts/bench_diffusion_memory.py --policy osediff --preset sd21 --size 512   # on a GPU

The SD folder is built from configs with random weights (nothing is downloaded; values do not
change memory or time): ``sd21`` has Stable Diffusion 2.1 base's UNet and VAE sizes, ``small`` a
CPU-sized UNet (32-64-128 channels) and VAE, ``tiny`` the test models. The prompt is a fixed
random embedding (no text encoder), the reward the mean of the SR image (the policy's memory
alone: a reward model adds the same amount to every row).

Measure:
- GPU: ``torch.cuda.max_memory_allocated`` during the step minus the allocation before it.
- CPU: peak RSS growth: the kernel's high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs`` right before the step) minus the RSS before the step. The script
  re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` fixed so that glibc returns large tensors to
  the kernel when freed: RSS then follows live tensor memory.
Each row builds a fresh policy; the step is forward + backward + Adam step.
"""
import argparse
import gc
import os
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]
MMAP_ENV = 'MALLOC_MMAP_THRESHOLD_'

PRESETS = {  # (UNet kwargs, VAE kwargs, text dim)
    'tiny': ({'block_out_channels': (8, 16), 'layers_per_block': 1, 'attention_head_dim': 4, 'norm_num_groups': 8,
              'down_block_types': ('CrossAttnDownBlock2D', 'DownBlock2D'),
              'up_block_types': ('UpBlock2D', 'CrossAttnUpBlock2D')},
             {'block_out_channels': (8, 16), 'layers_per_block': 1, 'norm_num_groups': 8}, 16),
    'small': ({'block_out_channels': (32, 64, 128), 'layers_per_block': 1, 'attention_head_dim': 8,
               'norm_num_groups': 32, 'down_block_types': ('CrossAttnDownBlock2D',) * 2 + ('DownBlock2D',),
               'up_block_types': ('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 2},
              {'block_out_channels': (32, 64, 128), 'layers_per_block': 1, 'norm_num_groups': 32}, 64),
    'sd21': ({'block_out_channels': (320, 640, 1280, 1280), 'layers_per_block': 2,
              'attention_head_dim': (5, 10, 20, 20), 'use_linear_projection': True,
              'down_block_types': ('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',),
              'up_block_types': ('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3},
             {'block_out_channels': (128, 256, 512, 512), 'layers_per_block': 2}, 1024),
}


def make_sd(root, preset):
    """A diffusers SD folder (unet/ vae/ scheduler/) with random weights, and a prompt-embedding file."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    unet_kw, vae_kw, text_dim = PRESETS[preset]
    torch.manual_seed(0)
    UNet2DConditionModel(in_channels=4, out_channels=4, cross_attention_dim=text_dim,
                         **unet_kw).save_pretrained(os.path.join(root, 'unet'))
    n = len(vae_kw['block_out_channels'])
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=('DownEncoderBlock2D',) * n,
                  up_block_types=('UpDecoderBlock2D',) * n, **vae_kw).save_pretrained(os.path.join(root, 'vae'))
    DDPMScheduler(num_train_timesteps=1000, beta_schedule='scaled_linear', beta_start=0.00085,
                  beta_end=0.012).save_pretrained(os.path.join(root, 'scheduler'))
    embeds = os.path.join(root, 'prompt_embeds.safetensors')
    save_file({'prompt_embeds': torch.randn(1, 77, text_dim)}, embeds)
    return root, embeds


def _status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f'no {key} in /proc/self/status')


class PeakMemory:
    """Peak growth (MiB) over a block: CUDA allocator on a GPU, kernel RSS high-water mark on CPU."""

    def __init__(self, device):
        self.cuda = device.type == 'cuda'

    def __enter__(self):
        import torch
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2 ** 20
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset VmHWM to the current RSS
            self.base = _status('VmRSS')
        return self

    def __exit__(self, *exc):
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2 ** 20 - self.base
        else:
            self.peak = _status('VmHWM') - self.base


class MeanReward:
    """Reward = mean intensity of each SR image (cheap, differentiable; what a reward loss returns)."""
    loss_weight = 1.0

    def __call__(self, sr, gt=None, return_terms=False):
        r = sr.flatten(1).mean(1)
        return -r.mean(), {'reward': r}


def bench_row(args, sd, embeds, device, precision, checkpointing, tile):
    import torch

    from finpercep_basicsr.archs.diffusion_memory import configure_policy_memory
    from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
    from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
    torch.manual_seed(0)
    policy = FinPercepOSEDiffGenerator(sd, prompt_embeds_path=embeds, explore_sigma=0.05).to(device)
    configure_policy_memory(policy, {'mixed_precision': precision, 'gradient_checkpointing': checkpointing,
                                     'vae_tile': tile}, device)
    optim = torch.optim.Adam(policy.trainable_parameters(), lr=1e-5)
    lq = torch.rand(args.batch, 3, args.size // 4, args.size // 4, device=device)
    model = SimpleNamespace(net_g=policy, get_bare_model=lambda n: n, lq=lq, gt=None, grad_steps=1,
                            net_ref=policy, opt={'dist': False},
                            curriculum=SimpleNamespace(step=lambda it: [(MeanReward(), 1.0)]))
    model._generator_loss = lambda sr, it: (-sr.mean(), {'l_total': -sr.mean()})  # ReFL: the reward alone
    algo = build_rl_algorithm({'algorithm': args.algorithm, 'group_size': 2})
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        _, total, _ = algo.generator_loss(model, 0)
        total.backward()
        optim.step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    ok = bool(torch.isfinite(total))
    del policy, optim, model, total
    gc.collect()
    return mem.peak, seconds, ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='small', choices=sorted(PRESETS))
    p.add_argument('--size', type=int, default=256, help='SR size in px (LQ = size / 4)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--algorithm', default='refl', choices=['refl', 'grpo'])
    p.add_argument('--tile', type=int, default=0, help='vae_tile of the tiled rows (default size / 2)')
    p.add_argument('--precision', nargs='+', default=None, choices=['no', 'bf16', 'fp16'],
                   help='rows to run (default: no bf16, + fp16 on a GPU; bf16 convolutions are slow on most CPUs)')
    p.add_argument('--tiling', default='both', choices=['both', 'off', 'on'], help='VAE tiling rows')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    import torch
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.type == 'cpu' and 'fp16' in (args.precision or []):
        p.error('fp16 needs a CUDA GPU; use --precision no bf16 on CPU')
    if device.type == 'cpu' and MMAP_ENV not in os.environ:
        # large tensors in their own mappings: freed memory leaves the RSS, so RSS peaks are tensor peaks
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, **{MMAP_ENV: '131072'}))
    torch.set_num_threads(args.threads)
    import finpercep_basicsr  # noqa: F401
    sd, embeds = make_sd(tempfile.mkdtemp(prefix='bench_mem_'), args.preset)
    precisions = args.precision or ['no', 'bf16'] + (['fp16'] if device.type == 'cuda' else [])
    tile = args.tile or args.size // 2
    tiles = {'both': (None, tile), 'off': (None,), 'on': (tile,)}[args.tiling]
    measure = 'CUDA peak allocated' if device.type == 'cuda' else 'CPU peak RSS growth (VmHWM - RSS before)'
    print(f'OSEDiff {args.algorithm} step, preset {args.preset}, SR {args.size}x{args.size}, batch {args.batch}, '
          f'{device.type}, {args.threads} thread(s); memory = {measure}, MiB')
    bench_row(args, sd, embeds, device, 'no', False, None)  # warm-up: one-off allocator and kernel caches
    print('| precision | checkpointing | vae_tile | peak MiB | step s |\n|---|---|---|---:|---:|')
    for precision in precisions:
        for checkpointing in (False, True):
            for tiled in tiles:
                peak, seconds, ok = bench_row(args, sd, embeds, device, precision, checkpointing, tiled)
                print(f'| {precision} | {"on" if checkpointing else "off"} | {tiled or "off"} | {peak:8.1f} | '
                      f'{seconds:6.2f} |{"" if ok else " non-finite loss"}', flush=True)


if __name__ == '__main__':
    main()
