"""Time and peak memory of one RLHF step per diffusion generator, and the reward model's share.

    python scripts/bench_diffusion_rlhf.py --size 32 --repeats 3 --algorithm refl

Builds tiny random SD/SeeSR folders (``finpercep_basicsr.evaluation.random_diffusion``, preset
``tiny``, a fixed random prompt embedding), or uses ``--sd-path``/``--seesr-path`` for real weights
(prompt ``a photo``). The reward is FinPercep-RM stage 3 on EfficientNet-Lite0 (random weights:
timing does not depend on values). Peak memory: CUDA peak allocation during the step on a GPU; on
CPU the growth of the process's RSS high-water mark during the step (the script re-executes itself
so that freed tensors leave the RSS). See ``finpercep_basicsr.evaluation.rlhf_step_bench``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=32, help='SR size (LQ = size / 4)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--steps', type=int, default=4, help='SeeSR sampling steps')
    p.add_argument('--algorithm', default='refl', choices=['refl', 'grpo', 'dpo'])
    p.add_argument('--sd-path'), p.add_argument('--seesr-path')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    from finpercep_basicsr.evaluation.rlhf_step_bench import run_diffusion_policies
    from finpercep_basicsr.evaluation.timing import run_memory_bench
    return run_memory_bench(run_diffusion_policies, args.sd_path, args.seesr_path, args.size, args.batch,
                            args.repeats, args.steps, args.algorithm, args.threads)


if __name__ == '__main__':
    sys.exit(main())
