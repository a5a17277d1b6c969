"""Peak memory and time of one RLHF step of OSEDiff, SeeSR or StableSR, for precision x checkpointing x VAE tiling.

    python scripts/bench_diffusion_memory.py --preset small --size 256
    python scripts/bench_diffusion_memory.py --preset sd21 --size 512   # on a GPU
    python scripts/bench_diffusion_memory.py --preset sd21 --size 256 --precision no --tiling off --reference both
    python scripts/bench_diffusion_memory.py --model all --preset tiny --size 32

The SD folder is built from configs with random weights (nothing is downloaded; values do not
change memory or time): ``sd21`` has Stable Diffusion 2.1 base's UNet and VAE sizes, ``small`` a
CPU-sized UNet (32-64-128 channels) and VAE, ``tiny`` the test models; SeeSR's UNet and ControlNet
carry its image cross-attention (run without a tagger, so it is skipped). The prompt is a fixed
random embedding (no text encoder), the reward the mean of the SR image (the policy's memory
alone: a reward model adds the same amount to every row). The step's fidelity terms include the
L1 to the frozen reference's output (``ref_opt``); ``--reference`` picks the policy's shared
reference (its own modules, frozen copies of the trained tensors), the deep copy, or both.

Measure (``step peak``: growth during the step; ``total peak``: the whole process, weights included):
- GPU: ``torch.cuda.max_memory_allocated`` during the step (total) minus the allocation before it.
- CPU: the kernel's RSS high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` right
  before the step; total) minus the RSS before the step. The script
  re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` fixed so that glibc returns large tensors to
  the kernel when freed: RSS then follows live tensor memory.
Each row builds a fresh policy; the step is forward + backward + Adam step.
See ``finpercep_basicsr.evaluation.rlhf_step_bench``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='osediff', choices=['osediff', 'seesr', 'stablesr', 'all'])
    p.add_argument('--preset', default='small', choices=['sd21', 'small', 'tiny'])
    p.add_argument('--size', type=int, default=256, help='SR size in px (LQ = size / 4)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--algorithm', default='refl', choices=['refl', 'grpo'])
    p.add_argument('--tile', type=int, default=0, help='vae_tile of the tiled rows (default size / 2)')
    p.add_argument('--precision', nargs='+', default=None, choices=['no', 'bf16', 'fp16'],
                   help='rows to run (default: no bf16, + fp16 on a GPU)')
    p.add_argument('--tiling', default='both', choices=['both', 'off', 'on'], help='VAE tiling rows')
    p.add_argument('--checkpointing', default='both', choices=['both', 'off', 'on'], help='gradient checkpointing rows')
    p.add_argument('--reference', default='shared', choices=['shared', 'copy', 'both'],
                   help='frozen reference rows: shared (what training uses), copy (a deep copy), both')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    from finpercep_basicsr.evaluation.rlhf_step_bench import run_diffusion_memory
    from finpercep_basicsr.evaluation.timing import run_memory_bench
    return run_memory_bench(run_diffusion_memory, args.preset, args.size, args.batch, args.algorithm, args.tile,
                            args.precision, args.tiling, args.threads, args.reference, args.model,
                            args.checkpointing)


if __name__ == '__main__':
    sys.exit(main())
