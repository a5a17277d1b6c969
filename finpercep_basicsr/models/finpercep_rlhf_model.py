"""RLHF of an SR generator with a FinPercep reward (ReFL, DPO, GRPO), fidelity regularisers and the CCL schedule."""
import inspect
import os
from collections import OrderedDict
from copy import deepcopy

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY

from finpercep_basicsr.curriculum.coevolution import RewardCoEvolution
from finpercep_basicsr.curriculum.schedule import RewardCurriculum
from finpercep_basicsr.losses.finpercep_reward_loss import pdm_artifact_rate
from finpercep_basicsr.models.finpercep_base_model import FinPercepBaseModel
from finpercep_basicsr.archs.diffusion_memory import configure_policy_memory
from finpercep_basicsr.archs.generator_policy import build_policy
from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
from finpercep_basicsr.models.rlhf_ddp import NoiseStream, check_ranks_agree, gather_rng_states, restore_rank_rng
from finpercep_basicsr.utils.checkpoint import CheckpointMismatchError, atomic_torch_save, load_checkpoint
from finpercep_basicsr.utils.errors import UserInputError

REFERENCE_FILE = 'net_g_ref.pth'


def _grads_finite(params):
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)


@MODEL_REGISTRY.register()
class FinPercepRLHFModel(FinPercepBaseModel):
    """Reward fine-tuning of a generator policy (ReFL: the reward is backpropagated through it).

    ReFL's generator loss = -mean(sum_k blend_k * loss_weight_k * R_k(SR)) + pixel(SR, GT)
    + ref(SR, Ref(LQ)) + perceptual(SR, GT) + GAN(SR); the rewards and blends come from the CCL schedule
    (``train.ccl``) or from ``train.reward_opt`` alone. The algorithms (``models.rl_algorithms``) use
    the model through its ``RLHFPolicyModel`` interface: ``generate``, ``rollout``, ``log_prob``,
    ``reference_log_prob``, ``reward`` (the one scoring path of every algorithm) and ``fidelity_loss``.

    Options:
        network_g: any BasicSR arch (wrapped in ``BasicSRNetPolicy``) or a ``GeneratorPolicy`` arch.
        path.pretrain_network_g / param_key_g / strict_load_g: initial generator weights.
        rlhf.grad_steps: sampling steps with gradients (ReFL truncation; 1 for one-step generators).
        rlhf.algorithm: refl (default) | dpo | grpo, the per-step objective (``models.rl_algorithms``).
        rlhf.trainable: parameter-name patterns of the generator to train (fnmatch, or ``re:`` regex;
            ``GeneratorPolicy.restrict_trainable``); the rest is frozen. The EMA averages the trained
            parameters and holds exact copies of the frozen ones.
        train.reward_opt, train.ccl: reward losses and their schedule (``curriculum.schedule``);
            train.ccl.coevolve: online refresh of the reward network (``curriculum.coevolution``).
        train.pixel_opt, train.ref_opt, train.perceptual_opt: fidelity terms (any BasicSR loss);
            ``ref_opt`` compares with the frozen reference generator (the policy before RLHF).
        network_d + train.gan_opt + train.optim_d: optional BasicSR GAN term.
        train.optim_g, train.scheduler, train.ema_decay, train.ema_warmup (``ema_decay_at``), train.grad_clip_norm.
        val.metrics (BasicSR metrics on uint8 images), val.pdm_threshold, val.num_pdm_images.
        rlhf.mixed_precision (no | bf16 | fp16), rlhf.gradient_checkpointing, rlhf.vae_tile
            (+ vae_tile_overlap): memory options of the policy (``archs.diffusion_memory``); fp16
            adds a GradScaler whose overflow steps count as non-finite skips.

    Every step whose loss or gradients are NaN/Inf is skipped (no optimiser, EMA or discriminator
    update) and counted in ``nonfinite_skips``.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.grad_steps = int(opt.get('rlhf', {}).get('grad_steps', 1))
        self.rl_algorithm = build_rl_algorithm(opt.get('rlhf'))  # rlhf.algorithm: refl | dpo | grpo | ...
        policy = build_policy(opt['network_g'], opt.get('scale', 4))
        # before DDP wraps the policy: DDP only syncs parameters that require grad at construction
        self.trainable_names = policy.restrict_trainable((opt.get('rlhf') or {}).get('trainable'))
        self.frozen_names = [n for n, p in policy.weights_module().named_parameters() if not p.requires_grad]
        self.amp_dtype = configure_policy_memory(policy, opt.get('rlhf'), self.device)  # casts what is frozen
        self.net_g = self.model_to_device(policy)
        self.print_network(self.net_g)
        if self.frozen_names:
            get_root_logger().info(f'rlhf.trainable: training {len(self.trainable_names)} parameter tensors '
                                   f'({self.trainable_names[0]} .. {self.trainable_names[-1]}), '
                                   f'{len(self.frozen_names)} frozen')
        self._load_pretrained(self.get_bare_model(self.net_g), opt['path'].get('param_key_g', 'params'))
        if self.is_train:
            self.init_training_settings()

    def _load_pretrained(self, policy, param_key):
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(policy.weights_module(), load_path, self.opt['path'].get('strict_load_g', True),
                              param_key)

    # ---- set-up -------------------------------------------------------------------------------
    def init_training_settings(self):
        train_opt = self.opt['train']
        policy = self.get_bare_model(self.net_g)
        self.net_g.train()
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            self.net_g_ema = policy.frozen_copy()
            self._load_pretrained(self.net_g_ema, 'params_ema')
        self.cri_pix, self.cri_ref, self.cri_perceptual, self.cri_gan = (
            build_loss(deepcopy(train_opt[k])).to(self.device) if train_opt.get(k) else None
            for k in ('pixel_opt', 'ref_opt', 'perceptual_opt', 'gan_opt'))
        self.curriculum = RewardCurriculum(train_opt, self.device, seed=self.opt.get('manual_seed') or 0)
        needs_ref = self.cri_ref is not None or self.rl_algorithm.needs_reference or self.curriculum.has_ceiling()
        self.net_ref = self._build_reference(policy) if needs_ref else None
        self.coevolution = RewardCoEvolution((train_opt.get('ccl') or {}).get('coevolve'), self.device)
        self.grad_clip_norm = train_opt.get('grad_clip_norm')
        self.nonfinite_skips = 0
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        # sampling noise apart from the data loader's draws: resumed runs continue it exactly
        self.noise = NoiseStream((self.opt.get('manual_seed') or 0) + 7919 * (self.opt.get('rank', 0) + 1),
                                 self.device)
        optim_opt = deepcopy(train_opt['optim_g'])
        self.optimizer_g = self.get_optimizer(optim_opt.pop('type'), policy.trainable_parameters(), **optim_opt)
        self.optimizers.append(self.optimizer_g)
        self.net_d = None
        if self.cri_gan is not None:
            if 'network_d' not in self.opt:
                raise UserInputError('train.gan_opt needs a network_d section')
            self.net_d = self.model_to_device(build_network(deepcopy(self.opt['network_d'])))
            if self.opt['path'].get('pretrain_network_d') is not None:
                self.load_network(self.net_d, self.opt['path']['pretrain_network_d'],
                                  self.opt['path'].get('strict_load_d', True), 'params')
            optim_opt = deepcopy(train_opt['optim_d'])
            self.optimizer_d = self.get_optimizer(optim_opt.pop('type'), self.net_d.parameters(), **optim_opt)
            self.optimizers.append(self.optimizer_d)
        self.setup_schedulers()

    def _build_reference(self, policy):
        """Frozen reference: the initial policy, or the one saved by the run being resumed.

        ``policy.make_reference()`` decides how: a deep copy (BasicSR nets), or a diffusion policy's
        ``SharedReference`` running the policy's own modules (the frozen base is not copied) with
        frozen copies of its trained tensors; ``net_g_ref.pth`` holds those tensors either way.
        """
        ref = policy.make_reference().to(self.device)
        if self.opt['path'].get('resume_state'):
            path = os.path.join(self.opt['path']['models'], REFERENCE_FILE)
            if not os.path.isfile(path):
                raise UserInputError(f'resuming needs the reference generator {path} (saved with the first '
                                     f'checkpoint of the run); it is missing')
            ref.weights_module().load_state_dict(load_checkpoint(path, 'reference generator')['params'])
        return ref

    # ---- training -----------------------------------------------------------------------------
    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        self.gt = data['gt'].to(self.device) if 'gt' in data else None

    def _reference_output(self):
        """The frozen reference generator's output for the current LQ, computed once per LQ tensor."""
        if getattr(self, '_ref_input', None) is not self.lq:
            with torch.no_grad():
                self._ref_out = self.net_ref(self.lq, grad_steps=0)
            self._ref_input = self.lq
        return self._ref_out

    # ---- the RLHFPolicyModel interface of the RL algorithms (models.rl_algorithms) -----------------
    def generate(self):
        """SR (B, 3, sH, sW) of the fed LQ with gradients through the last ``rlhf.grad_steps`` sampling steps."""
        return self.net_g(self.lq, grad_steps=self.grad_steps)

    def rollout(self, group_size):
        """``Trajectory`` of ``group_size`` stochastic samples of each fed LQ (consecutive rows), no gradients."""
        policy = self.get_bare_model(self.net_g)
        if not getattr(policy, 'stochastic', False):
            raise UserInputError(f'rlhf.algorithm {self.rl_algorithm.name} needs a stochastic policy: '
                                 f'{type(policy).__name__} has none (diffusion generators: rollout_eta > 0 or '
                                 f'explore_sigma > 0)')
        return policy.sample_trajectory(self.lq.repeat_interleave(group_size, 0))

    def log_prob(self, trajectory):
        """(N, T) log-probabilities under the trained policy, with gradients; through DDP's forward when the
        policy is wrapped, so that their gradients are all-reduced."""
        policy = self.get_bare_model(self.net_g)
        if self.net_g is policy:
            return policy.log_prob(trajectory)
        if 'trajectory' not in inspect.signature(policy.forward).parameters:
            raise UserInputError(f'{type(policy).__name__} cannot run grpo/dpo under DDP: its forward has no '
                                 f'trajectory argument (the diffusion policies have one)')
        return self.net_g(trajectory=trajectory)

    @torch.no_grad()
    def reference_log_prob(self, trajectory):
        """(N, T) log-probabilities under the frozen reference generator."""
        return self.net_ref.log_prob(trajectory)

    def reward(self, sr, current_iter, group_size=1, ceiling=True):
        """Per-image reward of the CCL rewards scheduled at ``current_iter``, differentiable w.r.t. ``sr``.

        Args:
            sr (Tensor): (B * G, 3, sH, sW) outputs for the fed batch, G = ``group_size`` consecutive
                samples per LQ.
            current_iter (int): Iteration; selects the CCL stages and their blend.
            group_size (int): G.
            ceiling (bool): Cap each reward that has a ``reference_margin`` at the frozen reference
                generator's reward on the same LQ + margin (no gradient above it); False measures the
                uncapped reward.

        Returns:
            tuple[Tensor, dict]: Rewards (B * G,) = sum_k blend_k * loss_weight_k * R_k, and the blend-weighted
            means of the terms ``reward`` (uncapped, before ``loss_weight``), ``score``, ``map_peak``, ``capped``.
        """
        gt = None if self.gt is None else self.gt.repeat_interleave(group_size, 0)
        # one reference output per LQ: the reward aligns it with that LQ's G samples
        reference = self._reference_output() if ceiling and self.curriculum.has_ceiling(current_iter) else None
        # an LQ-conditioned reward model judges each output against its own input; the others ignore it
        return self.curriculum.rewards(sr, current_iter, gt, reference, self.lq.repeat_interleave(group_size, 0))

    def fidelity_loss(self, sr):
        """The regularisers of ``sr`` (B, 3, sH, sW) against the fed batch: OrderedDict of scalar losses."""
        loss_dict = OrderedDict()
        if self.cri_pix is not None:
            loss_dict['l_pix'] = self.cri_pix(sr, self.gt)
        if self.cri_ref is not None:
            loss_dict['l_ref'] = self.cri_ref(sr, self._reference_output())
        if self.cri_perceptual is not None:
            l_percep, l_style = self.cri_perceptual(sr, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    loss_dict[name] = value
        if self.cri_gan is not None:
            for p in self.net_d.parameters():
                p.requires_grad_(False)
            loss_dict['l_g_gan'] = self.cri_gan(self.net_d(sr), True, is_disc=False)
        return loss_dict

    def _step_is_finite(self, loss, params):
        ok = torch.tensor(float(bool(torch.isfinite(loss)) and _grads_finite(params)), device=self.device)
        if self.opt['dist']:  # every rank must take the same decision
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def optimize_parameters(self, current_iter):
        with self.noise.active():
            self._optimize(current_iter)

    def _optimize(self, current_iter):
        policy = self.get_bare_model(self.net_g)
        params = policy.trainable_parameters()
        self.optimizer_g.zero_grad(set_to_none=True)
        sr, total, loss_dict = self.rl_algorithm.generator_loss(self, current_iter)
        # backward even for a NaN loss: DDP ranks must all run the same all-reduce
        self.grad_scaler.scale(total).backward()
        self.grad_scaler.unscale_(self.optimizer_g)  # fp16: true gradients for the finite check and clipping
        finite = self._step_is_finite(total.detach(), params)
        if finite:
            if self.grad_clip_norm:
                loss_dict['grad_norm'] = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm).detach()
            self.grad_scaler.step(self.optimizer_g)
            if self.ema_decay > 0:
                self._update_ema(current_iter)
            if self.net_d is not None:
                loss_dict.update(self._discriminator_step(sr.detach()))
            loss_dict.update(self.coevolution.maybe_update(current_iter, self.curriculum, sr.detach(), self.gt))
        else:
            self.optimizer_g.zero_grad(set_to_none=True)
            self.nonfinite_skips += 1
            get_root_logger().warning(f'iter {current_iter}: non-finite reward/loss or gradients, step skipped '
                                      f'({self.nonfinite_skips} so far)')
            loss_dict = OrderedDict()  # the NaN terms of a step that did not happen are not logged
        if self.grad_scaler.is_enabled():
            self.grad_scaler.update()  # an overflow step lowers the scale
            loss_dict['grad_scale'] = self.grad_scaler.get_scale()
        loss_dict.update(self.curriculum.log_values(current_iter))
        loss_dict['nonfinite_skips'] = float(self.nonfinite_skips)
        self.log_dict = self.reduce_loss_dict(
            OrderedDict((k, torch.as_tensor(v, dtype=torch.float32).detach().reshape(()).to(self.device))
                        for k, v in loss_dict.items()))

    @torch.no_grad()
    def _update_ema(self, current_iter):
        ema, net = self.net_g_ema.weights_module(), self.get_bare_model(self.net_g).weights_module()
        self.ema_update(ema, net, self.ema_decay_at(current_iter))
        # frozen weights are constant; a copy keeps them bit-identical (d*w + (1-d)*w may round)
        ema_params, params = dict(ema.named_parameters()), dict(net.named_parameters())
        for name in self.frozen_names:
            ema_params[name].copy_(params[name])

    def _discriminator_step(self, sr):
        for p in self.net_d.parameters():
            p.requires_grad_(True)
        self.optimizer_d.zero_grad(set_to_none=True)
        l_real = self.cri_gan(self.net_d(self.gt), True, is_disc=True)
        l_fake = self.cri_gan(self.net_d(sr), False, is_disc=True)
        (l_real + l_fake).backward()
        self.optimizer_d.step()
        return {'l_d_real': l_real.detach(), 'l_d_fake': l_fake.detach()}

    # ---- evaluation ---------------------------------------------------------------------------
    def _eval_policy(self):
        return self.net_g_ema if getattr(self, 'ema_decay', 0) > 0 else self.get_bare_model(self.net_g)

    def test(self):
        policy = self._eval_policy()
        was_training = policy.training
        policy.eval()
        with torch.no_grad():
            self.output = policy.infer(self.lq)
        policy.train(was_training)

    def get_current_visuals(self):
        out = OrderedDict(lq=self.lq.detach().cpu(), result=self.output.detach().cpu())
        if self.gt is not None:
            out['gt'] = self.gt.detach().cpu()
        return out

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """BasicSR metrics on uint8 images plus the current stage's reward, RM score and PDM rate."""
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        metric_opts = val_opt.get('metrics') or {}
        threshold = val_opt.get('pdm_threshold', 0.5)
        num_images = val_opt.get('num_pdm_images', 2)
        reward = self.curriculum.active_module(current_iter) if hasattr(self, 'curriculum') else None
        sums, count = {}, 0
        for idx, data in enumerate(dataloader):
            self.feed_data(data)
            self.test()
            sr_img = tensor2img(self.output)
            values = {}
            if self.gt is not None:
                gt_img = tensor2img(self.gt)
                for name, mopt in metric_opts.items():
                    values[name] = calculate_metric({'img': sr_img, 'img2': gt_img}, deepcopy(mopt))
            if reward is not None:
                with torch.no_grad():
                    _, terms = reward(self.output, self.gt, return_terms=True)
                values['reward'] = terms['reward'].mean().item()
                values['rm_score'] = terms['score'].mean().item()
                if 'pdm' in terms:
                    values['pdm_rate'] = pdm_artifact_rate(terms['pdm'], threshold).mean().item()
                    if tb_logger and idx < num_images:
                        tb_logger.add_image(f'pdm/{dataset_name}/{idx}', terms['pdm'][0].cpu(), current_iter)
                        tb_logger.add_image(f'sr/{dataset_name}/{idx}', self.output[0].clamp(0, 1).cpu(),
                                            current_iter)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        self.metric_results = {k: v / max(count, 1) for k, v in sums.items()}
        get_root_logger().info(f'Validation {dataset_name} @ {current_iter}: '
                               + ', '.join(f'{k} {v:.4f}' for k, v in self.metric_results.items()))
        if tb_logger:
            for k, v in self.metric_results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{k}', v, current_iter)

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, epoch, current_iter):
        policy = self.get_bare_model(self.net_g)
        ranks = check_ranks_agree(policy.weights_module().state_dict(), self.device)  # collective
        if ranks > 1:
            get_root_logger().info(f'iter {current_iter}: trainable weights agree on {ranks} ranks')
        self._rank_rng = gather_rng_states(self.noise.state)  # collective: every rank's RNG into rank 0's state
        if self.ema_decay > 0:
            self.save_network([policy.weights_module(), self.net_g_ema.weights_module()], 'net_g', current_iter,
                              param_key=['params', 'params_ema'])
        else:
            self.save_network(policy.weights_module(), 'net_g', current_iter)
        if self.net_d is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
        ref_path = os.path.join(self.opt['path']['models'], REFERENCE_FILE)
        if self.net_ref is not None and self.opt.get('rank', 0) == 0 and not os.path.exists(ref_path):
            state = self.net_ref.weights_module().state_dict()
            atomic_torch_save({'params': {k: v.detach().cpu() for k, v in state.items()}}, ref_path)
        self.save_training_state(epoch, current_iter)

    def extra_training_state(self):
        return {'curriculum': self.curriculum.state_dict(), 'coevolution': self.coevolution.state_dict(),
                'nonfinite_skips': self.nonfinite_skips, 'trainable': list(self.trainable_names),
                'grad_scaler': self.grad_scaler.state_dict(), 'rng_ranks': getattr(self, '_rank_rng', None)}

    def resume_training(self, resume_state):
        saved = (resume_state.get('extra') or {}).get('trainable')
        if saved is not None and list(saved) != self.trainable_names:
            changed = sorted(set(saved) ^ set(self.trainable_names))
            raise CheckpointMismatchError(
                f'resume state {self.opt["path"].get("resume_state")} trained {len(saved)} parameter tensors, '
                f'rlhf.trainable now selects {len(self.trainable_names)} (differing: {", ".join(changed[:4])}'
                f'{" ..." if len(changed) > 4 else ""}); resume with the rlhf.trainable of that run')
        super().resume_training(resume_state)

    def load_extra_training_state(self, state):
        self.curriculum.load_state_dict(state.get('curriculum'))
        self.coevolution.load_state_dict(state.get('coevolution'))
        self.nonfinite_skips = int(state.get('nonfinite_skips', 0))
        if state.get('grad_scaler'):
            self.grad_scaler.load_state_dict(state['grad_scaler'])
        if not restore_rank_rng(state.get('rng_ranks'), self.opt.get('rank', 0), self.opt.get('world_size', 1),
                                self.noise) and self.opt.get('world_size', 1) > 1:
            get_root_logger().warning('the resume state holds no RNG state for this world size: ranks continue with '
                                      'fresh random streams (the run is not bit-identical to an uninterrupted one)')
