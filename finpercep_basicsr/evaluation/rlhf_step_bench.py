"""Time, reward share and peak memory of one RLHF step, for BasicSR nets and diffusion policies alike.

A step is what ``FinPercepRLHFModel`` does per iteration: the RL algorithm's generator loss on a
batch, backward, an Adam step. ``BenchModel`` is the ``RLHFPolicyModel`` the algorithms see: a policy,
its frozen reference, a random LQ batch (and GT) and a reward, with the reward's forward time
accumulated. Weights are random: the compute does not depend on their values (a checkpoint named
in an option file is not loaded). Three benchmarks run on it (time and memory: ``evaluation.timing``):

- ``run_partial_tuning`` (``scripts/bench_rlhf.py``): full vs partial fine-tuning (``rlhf.trainable``)
  of BasicSR generators, a ReFL step split into its parts; the configurations are interleaved (every
  repeat runs each once in turn, the order alternating) so a busy machine slows all alike.
- ``run_diffusion_policies`` (``scripts/bench_diffusion_rlhf.py``): OSEDiff and SeeSR, one step of
  any algorithm, the reward model's share of it and its peak memory.
- ``run_diffusion_memory`` (``scripts/bench_diffusion_memory.py``): OSEDiff's, SeeSR's or StableSR's
  peak memory and time per reference (shared or deep copy) x precision x gradient checkpointing x VAE tiling, a fresh
  policy per row.
"""
from collections import OrderedDict

import torch

from finpercep_basicsr.evaluation.timing import PeakMemory, median, timed
from finpercep_basicsr.utils.errors import UserInputError

ARCHS = {
    'RRDBNet-x4plus': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23,
                        'num_grow_ch': 32, 'scale': 4}, ['conv_up*', 'conv_hr.*', 'conv_last.*']),
    'SRVGG-animevideov3': ({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                            'num_conv': 16, 'upscale': 4, 'act_type': 'prelu'}, [r're:body\.(2[89]|3[0-4])\..*']),
}
"""The default generators: label -> (``network_g``, partial ``rlhf.trainable``): Real-ESRGAN x4plus's upsampling
tail after the trunk, realesr-animevideov3's last four convolutions and their PReLUs."""
REWARD = {'type': 'FinPercepRewardLoss', 'map_reduce': 'smooth_max', 'random_init': True,
          'network_opt': {'type': 'FinPercepRewardNet', 'encoder': 'efficientnet-lite0', 'pretrained': False,
                          'stage': 3}}
"""The default reward: FinPercep-RM stage 3 on EfficientNet-Lite0."""
PARTS = ('generator forward', 'reward forward', 'reward backward', 'regulariser', 'generator backward',
         'optimiser step')
COLUMNS = ('G-fwd', 'RM-fwd', 'RM-bwd', 'reg', 'G-bwd', 'optim')


class BenchModel:
    """The ``RLHFPolicyModel`` (``models.rl_algorithms``) of a benchmark: ``policy`` on one fixed batch.

    Args:
        policy (GeneratorPolicy): The trained policy.
        reward (callable): (N, 3, sH, sW) images -> (N,) rewards, differentiable w.r.t. the images.
        lq (Tensor): (B, 3, H, W) LQ batch in [0, 1].
        gt (Tensor | None): (B, 3, sH, sW) GT: the fidelity terms are L1 to it and to the reference's
            output (ReFL's ``pixel_opt`` and ``ref_opt``); None scores the reward alone.
        reference (GeneratorPolicy | None): Frozen reference (default: ``policy.make_reference()``).

    Attributes:
        reward_seconds (float): Time spent in reward forward passes (the caller resets it).
    """

    def __init__(self, policy, reward, lq, gt=None, reference=None):
        self.policy, self.reward_fn, self.lq, self.gt = policy, reward, lq, gt
        self.reference = policy.make_reference() if reference is None else reference
        self.reward_seconds = 0.0

    def generate(self):
        return self.policy(self.lq, grad_steps=1)

    def rollout(self, group_size):
        if not getattr(self.policy, 'stochastic', False):
            raise UserInputError(f'{type(self.policy).__name__} has no stochastic sampler (needed by grpo/dpo)')
        return self.policy.sample_trajectory(self.lq.repeat_interleave(group_size, 0))

    def log_prob(self, trajectory):
        return self.policy.log_prob(trajectory)

    @torch.no_grad()
    def reference_log_prob(self, trajectory):
        return self.reference.log_prob(trajectory)

    def reward(self, sr, current_iter=0, group_size=1, ceiling=True):
        rewards, seconds = timed(lambda: self.reward_fn(sr), sr.device)
        self.reward_seconds += seconds
        return rewards, {'reward': rewards.detach().mean()}

    def fidelity_loss(self, sr):
        if self.gt is None:
            return OrderedDict()
        with torch.no_grad():
            ref_out = self.reference(self.lq, grad_steps=0)
        return OrderedDict(l_pix=(sr - self.gt).abs().mean(), l_ref=(sr - ref_out).abs().mean())


def reward_of_loss(reward_opt, device=torch.device('cpu')):
    """A frozen reward loss of ``reward_opt`` (BasicSR loss options) as ``images -> (N,) rewards`` (with
    ``loss_weight``, as the RLHF model weights it)."""
    from copy import deepcopy

    from basicsr.losses import build_loss

    import finpercep_basicsr.losses  # noqa: F401  (registers the reward losses)
    loss = build_loss(deepcopy(reward_opt)).to(device)
    return lambda sr: loss.loss_weight * loss.image_rewards(sr)[0]


def refl_step_parts(model, optim):
    """One ReFL step on ``model``, split into its parts (``PARTS``); returns part -> seconds.

    The SR image is cut from the generator's graph, so the reward's and the regulariser's backward
    passes stop at it and the generator's backward is timed apart (from the SR gradient).
    """
    t = {}
    optim.zero_grad(set_to_none=True)
    sr, t['generator forward'] = timed(model.generate)
    sr_leaf = sr.detach().requires_grad_(True)
    loss, t['reward forward'] = timed(lambda: -model.reward(sr_leaf)[0].mean())
    _, t['reward backward'] = timed(loss.backward)
    _, t['regulariser'] = timed(lambda: sum(model.fidelity_loss(sr_leaf).values()).backward())
    _, t['generator backward'] = timed(lambda: sr.backward(sr_leaf.grad))
    _, t['optimiser step'] = timed(optim.step)
    return t


def measure_steps(model, algorithm, steps, lr=1e-5):
    """Run ``steps`` steps of ``algorithm`` (an ``RLAlgorithm``) on ``model``, each measured.

    Returns:
        list[dict]: Per step ``seconds``, ``reward_share`` (reward forward time / step time),
        ``peak_mib`` and ``total_mib`` (``PeakMemory``'s ``peak`` and ``total``) and ``finite`` (whether
        the loss was finite).
    """
    device = model.lq.device
    optim = torch.optim.Adam(model.policy.trainable_parameters(), lr=lr)

    def step(iteration):
        optim.zero_grad(set_to_none=True)
        _, total, _ = algorithm.generator_loss(model, iteration)
        total.backward()
        optim.step()
        return total

    rows = []
    for i in range(steps):
        model.reward_seconds = 0.0
        with PeakMemory(device) as mem:
            total, seconds = timed(lambda: step(i), device)
        rows.append({'seconds': seconds, 'reward_share': model.reward_seconds / seconds, 'peak_mib': mem.peak,
                     'total_mib': mem.total, 'finite': bool(torch.isfinite(total))})
    return rows


# ---- full vs partial fine-tuning of BasicSR generators (scripts/bench_rlhf.py) ------------------------------
def _partial_configs(opt_path, trainable, archs, default_reward):
    """``(configs, reward_opt, patterns)``: configs are ``(label, tuning, network_g, trainable or None)``."""
    if opt_path is None:
        configs = [c for label, (g, pats) in archs.items() for c in ((label, 'full', g, None),
                                                                  (label, 'partial', g, pats))]
        return configs, default_reward, {label: pats for label, (_, pats) in archs.items()}
    from finpercep_basicsr.utils.network_options import network_section
    from finpercep_basicsr.utils.option_check import load_option_file
    opt = load_option_file(opt_path)
    network_g = network_section(opt, 'network_g', opt_path)
    defaults = {g['type']: pats for g, pats in archs.values()}
    partial = trainable or (opt.get('rlhf') or {}).get('trainable') or defaults.get(network_g['type'])
    if partial is None:
        raise UserInputError(f'{opt_path}: no rlhf.trainable and no default partial selection for '
                             f'{network_g["type"]}; pass --trainable PATTERN ...')
    reward_opt = dict((opt.get('train') or {}).get('reward_opt') or default_reward)
    reward_opt.update(pretrain_path=None, random_init=True)  # timing needs no trained weights
    label = str(network_g['type'])
    return [(label, 'full', network_g, None), (label, 'partial', network_g, partial)], reward_opt, {label: partial}


def bench_partial_tuning(configs, reward_opt, gt_size, batch, repeats):
    """Median seconds per part of each configuration, measured interleaved (on the CPU).

    Args:
        configs (list[tuple[str, str, dict, list | None]]): ``(generator label, tuning label,
            network_g, trainable patterns or None for all)``.
        reward_opt (dict): Reward loss options (one frozen reward shared by every configuration).
        gt_size (int): SR patch size; the LQ input is ``gt_size / scale``.
        batch (int): Images per step.
        repeats (int): Timed rounds after one warm-up round.

    Returns:
        list[dict]: Per configuration ``label``, ``tuning``, ``trained``, ``total`` (parameters) and
        ``times`` (part -> median seconds).
    """
    import finpercep_basicsr.archs  # noqa: F401  (registers the generators)
    from finpercep_basicsr.archs.generator_policy import build_policy
    reward = reward_of_loss(reward_opt)
    benches = []
    for _, _, network_g, trainable in configs:
        torch.manual_seed(0)
        policy = build_policy(network_g)
        policy.restrict_trainable(trainable)
        lq = torch.rand(batch, 3, gt_size // policy.scale, gt_size // policy.scale)
        model = BenchModel(policy, reward, lq, torch.rand(batch, 3, gt_size, gt_size))
        benches.append((model, torch.optim.Adam(policy.trainable_parameters(), lr=1e-5)))
    runs = [[] for _ in benches]
    for r in range(repeats + 1):  # round 0 warms up allocators and kernels
        order = list(range(len(benches)))
        for i in (order if r % 2 else order[::-1]):
            t = refl_step_parts(*benches[i])
            if r:
                runs[i].append(t)
    out = []
    for (label, tuning, _, _), (model, optim), rs in zip(configs, benches, runs):
        trained = sum(p.numel() for p in model.policy.trainable_parameters())
        total = sum(p.numel() for p in model.policy.weights_module().parameters())
        out.append({'label': label, 'tuning': tuning, 'trained': trained, 'total': total,
                    'times': {k: median([x[k] for x in rs]) for k in PARTS}})
    return out


def format_table(results):
    """The printed table: one row per configuration, times in ms, the RM share and the speed-up."""
    head = (f'{"generator":<20s} {"tuning":<8s} {"trained/params":>17s} ' + ' '.join(f'{c:>8s}' for c in COLUMNS)
            + f' {"step":>8s} {"RM%":>6s} {"x-full":>6s}')
    lines = [head + '   (times in ms)']
    full = {}
    for res in results:
        step = sum(res['times'].values())
        if res['tuning'] == 'full':
            full[res['label']] = step
        rm = res['times']['reward forward'] + res['times']['reward backward']
        speedup = f'{full[res["label"]] / step:6.2f}' if res['label'] in full else f'{"-":>6s}'
        trained = f'{res["trained"]}/{res["total"]}'
        lines.append(f'{res["label"]:<20s} {res["tuning"]:<8s} {trained:>17s} '
                     + ' '.join(f'{res["times"][p] * 1000:8.1f}' for p in PARTS)
                     + f' {step * 1000:8.1f} {100 * rm / step:6.1f} {speedup}')
    return lines


def run_partial_tuning(opt_path=None, trainable=None, gt_size=128, batch=1, repeats=3, threads=None,
                       archs=ARCHS, default_reward=REWARD):
    """Print one ReFL step of full vs partial fine-tuning, part by part (``scripts/bench_rlhf.py``).

    Args:
        opt_path (str | None): RLHF option file: its ``network_g`` and ``train.reward_opt``, partial =
            ``trainable``, else its ``rlhf.trainable``, else the ``archs`` default for its arch. None:
            every generator of ``archs`` with ``default_reward``.
        trainable (list[str] | None): Partial fine-tuning patterns for the ``opt_path`` generator.
        gt_size, batch, repeats: See ``bench_partial_tuning``.
        threads (int | None): torch threads (None: torch's own count).
        archs (dict): label -> (``network_g``, partial patterns), as ``ARCHS``.
        default_reward (dict): Reward loss options when the option file has none.

    Raises:
        UserInputError: A bad option file, or a pattern that matches no parameter.
    """
    configs, reward_opt, patterns = _partial_configs(opt_path, trainable, archs, default_reward)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    results = bench_partial_tuning(configs, reward_opt, gt_size, batch, repeats)
    net_opt = reward_opt.get('network_opt') or {}
    print(f'one ReFL step, full vs partial fine-tuning: SR patch {gt_size}x{gt_size}, batch {batch}, '
          f'{threads} threads, median of {repeats} interleaved repeats')
    print(f'random weights (the compute does not depend on them); reward {reward_opt["type"]} '
          f'({net_opt.get("encoder", reward_opt.get("metric", ""))}, stage {net_opt.get("stage", "-")})')
    for line in format_table(results):
        print(line)
    for label, pats in patterns.items():
        print(f'partial {label}: rlhf.trainable {list(pats)}')
    print('RM% = reward forward + backward over the step; x-full = full fine-tuning step time / this step time')
    return results


# ---- diffusion policies (scripts/bench_diffusion_rlhf.py, scripts/bench_diffusion_memory.py) ---------------
def _device():
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def run_diffusion_policies(sd_path=None, seesr_path=None, size=32, batch=1, repeats=3, steps=4, algorithm='refl',
                           threads=1):
    """Print per diffusion policy (OSEDiff, SeeSR) the median step time, the reward share and the peak memory.

    The reward is ``REWARD`` (random weights); peak memory is ``PeakMemory``'s, the largest over the
    repeats. Without ``sd_path``, tiny random SD and SeeSR folders are used (``random_diffusion``,
    fixed prompt embeddings); with it, the fixed prompt ``a photo`` is encoded.

    Args:
        sd_path, seesr_path (str | None): Real SD base and SeeSR folders.
        size (int): SR size in px (LQ = size / 4). batch (int): LQ images per step.
        repeats (int): Timed steps after one warm-up step. steps (int): SeeSR sampling steps.
        algorithm (str): ``rlhf.algorithm``. threads (int): torch threads.
    """
    import contextlib

    import finpercep_basicsr.archs  # noqa: F401  (registers the policies)
    from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
    from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
    from finpercep_basicsr.evaluation.random_diffusion import random_sd
    from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
    torch.set_num_threads(threads)
    given = sd_path is not None
    device = _device()
    reward = reward_of_loss(REWARD, device)
    lq = torch.rand(batch, 3, size // 4, size // 4, device=device)
    print(f'one {algorithm} step, SR {size}x{size}, batch {batch}, device {device.type}, {threads} thread(s), '
          f'{"given" if given else "tiny random"} weights')
    folders = contextlib.nullcontext((sd_path, None, seesr_path)) if given else random_sd('tiny', seesr=True)
    with folders as (sd, embeds, seesr):
        prompt = {'prompt': 'a photo'} if given else {'prompt_embeds_path': embeds}
        policies = {'OSEDiff': lambda: FinPercepOSEDiffGenerator(sd, explore_sigma=0.05, **prompt),
                    'SeeSR': lambda: FinPercepSeeSRGenerator(sd, seesr, num_steps=steps, allow_no_tagger=True,
                                                             **prompt)}
        for name, make in policies.items():
            model = BenchModel(make().to(device), reward, lq)
            algo = build_rl_algorithm({'algorithm': algorithm, 'group_size': 2})
            rows = measure_steps(model, algo, repeats + 1)[1:]  # the first step warms up
            sec, share = median([r['seconds'] for r in rows]), median([r['reward_share'] for r in rows])
            print(f'{name:8s} step {sec * 1000:8.1f} ms   reward share {100 * share:5.1f} %   '
                  f'peak mem +{max(r["peak_mib"] for r in rows):7.1f} MiB')


MEMORY_MODELS = ('osediff', 'seesr', 'stablesr')
"""The diffusion policies ``run_diffusion_memory`` measures (``all``: every one)."""
MEMORY_NOTES = {
    'osediff': 'OSEDiff: one UNet step (LoRA trained) + VAE',
    'seesr': 'SeeSR: UNet + ControlNet with their image cross-attention weights, 4 DDIM steps (gradient through '
             'the last), UNet LoRA trained; no tagger (allow_no_tagger): the image cross-attention does not run',
    'stablesr': 'StableSR: 4 DDIM steps (gradient through the last), time-aware encoder and SPADE trained (StableSR '
                'default sizes), CFW in the VAE decoder (cfw_weight 0.5, frozen); tiled rows not run: CFW fuses '
                'whole-image encoder features',
}


def _memory_policy(model, sd, embeds, seesr):
    """A fresh ``model`` policy (a key of ``MEMORY_MODELS``) on the random folders, as its option files build it."""
    from finpercep_basicsr.archs import osediff_arch, seesr_arch, stablesr_arch
    if model == 'seesr':
        return seesr_arch.FinPercepSeeSRGenerator(sd, seesr, prompt_embeds_path=embeds, allow_no_tagger=True)
    if model == 'stablesr':  # train_parts: structcond and spade, as StableSR trains them (CFW frozen)
        return stablesr_arch.FinPercepStableSRGenerator(sd, prompt_embeds_path=embeds)
    return osediff_arch.FinPercepOSEDiffGenerator(sd, prompt_embeds_path=embeds, explore_sigma=0.05)


def run_diffusion_memory(preset='small', size=256, batch=1, algorithm='refl', tile=0, precisions=None, tiling='both',
                         threads=1, reference='shared', model='osediff', checkpointing='both'):
    """Print a diffusion policy's peak memory and step time per reference x precision x checkpointing x VAE tiling.

    The SD (and SeeSR) folders have random weights at ``preset``'s sizes in the released layouts
    (``random_diffusion``); the reward is the mean of the SR image, so the rows show the policy's memory
    alone (a reward model adds the same to every row). The step has ReFL's ``ref_opt`` term (or grpo's
    KL term) on the frozen reference: the policy's ``SharedReference`` or the deep copy the references
    used to be. Each row builds a fresh policy and reference, after one warm-up row per model, and
    reports the step's peak growth and the process's total peak during the step (weights, reference
    and step). On a CPU, run the process through ``timing.rerun_with_tensor_sized_rss`` first, or freed
    tensors stay in the RSS; the weights are memory-mapped and enter the RSS when first read (by the
    step, or earlier by a deep copy), so compare rows by their totals. ``MEMORY_NOTES``: each step.

    Args:
        preset (str): ``tiny``, ``small`` or ``sd21``. size (int): SR size in px (LQ = size / 4).
        batch (int): LQ images per step. algorithm (str): ``rlhf.algorithm``.
        tile (int): ``rlhf.vae_tile`` of the tiled rows (0: size / 2).
        precisions (list[str] | None): ``rlhf.mixed_precision`` rows (default: no, bf16, and fp16 on a GPU).
        tiling (str): ``both``, ``off`` or ``on``: which VAE tiling rows to run (StableSR: off only).
        threads (int): torch threads.
        reference (str): ``shared``, ``copy`` or ``both``: which reference rows to run.
        model (str): A key of ``MEMORY_MODELS`` or ``all``. checkpointing (str): ``both``, ``off`` or ``on`` rows.

    Raises:
        UserInputError: fp16 rows without a CUDA GPU, or an unknown model.
    """
    import finpercep_basicsr.archs  # noqa: F401  (registers the policies)
    from finpercep_basicsr.archs.diffusion_memory import configure_policy_memory
    from finpercep_basicsr.archs.generator_policy import GeneratorPolicy
    from finpercep_basicsr.evaluation.random_diffusion import random_sd
    from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
    device = _device()
    if device.type == 'cpu' and 'fp16' in (precisions or []):
        raise UserInputError('fp16 needs a CUDA GPU; use --precision no bf16 on CPU')
    models = MEMORY_MODELS if model == 'all' else (model,)
    if not set(models) <= set(MEMORY_MODELS):
        raise UserInputError(f'model {model!r}: choose among {list(MEMORY_MODELS)} or all')
    torch.set_num_threads(threads)
    algo = build_rl_algorithm({'algorithm': algorithm, 'group_size': 2})
    precisions = precisions or ['no', 'bf16'] + (['fp16'] if device.type == 'cuda' else [])
    tile = tile or size // 2
    tiles = {'both': (None, tile), 'off': (None,), 'on': (tile,)}[tiling]
    references = {'both': ('shared', 'copy'), 'shared': ('shared',), 'copy': ('copy',)}[reference]
    checkpoints = {'both': (False, True), 'off': (False,), 'on': (True,)}[checkpointing]
    measure = ('CUDA peak allocated (growth in the step; total)' if device.type == 'cuda' else
               'CPU peak RSS (growth in the step: VmHWM - RSS before; total: VmHWM)')
    print(f'{"/".join(models)} {algorithm} step, preset {preset}, SR {size}x{size}, batch {batch}, {device.type}, '
          f'{threads} thread(s); memory = {measure}, MiB')
    with random_sd(preset, seesr='seesr' in models) as (sd, embeds, seesr):
        def row(name, ref, precision, ckpt, vae_tile):
            torch.manual_seed(0)
            policy = _memory_policy(name, sd, embeds, seesr).to(device)
            configure_policy_memory(policy, {'mixed_precision': precision, 'gradient_checkpointing': ckpt,
                                             'vae_tile': vae_tile}, device)
            # after the memory options, as the RLHF model makes it: the copy then holds the cast base
            reference = policy.make_reference() if ref == 'shared' else GeneratorPolicy.make_reference(policy)
            lq = torch.rand(batch, 3, size // 4, size // 4, device=device)
            gt = torch.rand(batch, 3, size, size, device=device)
            bench = BenchModel(policy, lambda sr: sr.flatten(1).mean(1), lq, gt=gt, reference=reference)
            return measure_steps(bench, algo, 1)[0]

        print('\n'.join(MEMORY_NOTES[name] for name in models))
        print('| model | reference | precision | checkpointing | vae_tile | step peak MiB | total peak MiB | step s |\n'
              '|---|---|---|---|---|---:|---:|---:|', flush=True)
        for name in models:
            row(name, 'shared', 'no', False, None)  # warm-up: one-off allocator and kernel caches
            for precision in precisions:
                for ckpt in checkpoints:
                    for tiled in (tiles if name != 'stablesr' else [t for t in tiles if t is None]):
                        for ref in references:
                            r = row(name, ref, precision, ckpt, tiled)
                            print(f'| {name} | {ref} | {precision} | {"on" if ckpt else "off"} | '
                                  f'{tiled or "off"} | {r["peak_mib"]:8.1f} | {r["total_mib"]:8.1f} | '
                                  f'{r["seconds"]:6.2f} |{"" if r["finite"] else " non-finite loss"}', flush=True)
