"""CCL schedule: which reward model (RM_0 .. RM_N) the generator optimises at each iteration.

Options (``train.ccl``)::

    ccl:
      stages:
        - start_iter: 0                # first stage: from the start
          reward: {pretrain_path: rm0.pth, lambda_map: 0}
        - start_iter: 2000
          ramp_iters: 500              # blend RM_0 -> RM_1 over 500 iterations
          reward: {pretrain_path: rm1.pth, network_opt: {stage: 1}, lambda_map: 1.0}

Each stage's ``reward`` is deep-merged over ``train.reward_opt`` (the options of a reward loss:
``FinPercepRewardLoss`` or ``FinPercepGlobalIQALoss``, any ``FrozenRewardLoss``), so stages only state
what changes. Without ``train.ccl`` the schedule has one stage: ``train.reward_opt`` from iteration 0.

Hand-over: stage k with ``start_iter`` s and ``ramp_iters`` R > 0 has the blend weight
a(it) = min(1, (it - s + 1) / R) for it >= s; the loss is (1 - a) * L_{k-1} + a * L_k, so iteration
s + R - 1 is the first pure stage-k iteration. R = 0 switches at s. Two stages that differ only in
``lambda_score``/``lambda_map`` share one reward network; as the reward is linear in the lambdas, the
blend is applied to the lambdas instead (one forward pass, same loss).

The schedule is a pure function of the iteration; the state saved for resume is the iteration, the
stage boundaries (to warn when the option file changed) and the reward networks refreshed online
by co-evolution.
"""
import bisect
import json
from copy import deepcopy

from basicsr.losses import build_loss
from basicsr.utils import get_root_logger

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.options_io import deep_merge

WEIGHT_KEYS = ('lambda_score', 'lambda_map')
LOG_TERMS = ('reward', 'score', 'map_peak', 'capped')  # per-image terms of the rewards that are logged


def parse_stages(train_opt):
    """Stage list from ``train.ccl.stages`` (or a single stage from ``train.reward_opt``).

    Returns:
        list[dict]: ``{'start_iter', 'ramp_iters', 'reward', 'where'}``: full reward-loss options and
        the option key they come from (for error messages).

    Raises:
        UserInputError: Empty list, first stage after iteration 1, start iterations not increasing,
            a stage starting inside the previous ramp, or a stage without a reward ``type``.
    """
    base = train_opt.get('reward_opt') or {}
    ccl = train_opt.get('ccl')
    raw = (ccl or {}).get('stages') if ccl else [{'start_iter': 0, 'ramp_iters': 0}]
    if not raw:
        raise UserInputError('train.ccl.stages must be a non-empty list (or drop train.ccl)')
    stages = []
    for i, stage in enumerate(raw):
        where = f'train.ccl.stages[{i}]' if ccl else 'train.reward_opt'
        if not isinstance(stage, dict) or 'start_iter' not in stage:
            raise UserInputError(f'{where} needs a start_iter')
        reward = deep_merge(base, stage.get('reward'))
        if 'type' not in reward:
            raise UserInputError(f'{where}: no reward type (set train.reward_opt.type or {where}.reward.type)')
        start, ramp = int(stage['start_iter']), int(stage.get('ramp_iters', 0))
        if ramp < 0:
            raise UserInputError(f'{where}.ramp_iters must be >= 0, got {ramp}')
        if i == 0 and start > 1:
            raise UserInputError(f'{where}.start_iter is {start}: the first stage must start at 0 or 1')
        if stages and start < stages[-1]['start_iter'] + max(stages[-1]['ramp_iters'], 1):
            raise UserInputError(f'{where}.start_iter {start} must come after the previous stage '
                                 f'(start {stages[-1]["start_iter"]}, ramp {stages[-1]["ramp_iters"]})')
        stages.append({'start_iter': start, 'ramp_iters': ramp if i else 0, 'reward': reward,
                       'where': f'{where}.reward' if ccl else where})
    return stages


def _network_key(reward_opt):
    """Identity of a reward network: its options without the run-time weights."""
    return json.dumps({k: v for k, v in reward_opt.items() if k not in WEIGHT_KEYS}, sort_keys=True, default=str)


class RewardCurriculum:
    """Builds, caches and blends the reward losses of the CCL stages.

    Args:
        train_opt (dict): The ``train`` options (``reward_opt`` and optional ``ccl``).
        device (torch.device): Where reward networks live.
        seed (int): Base seed of randomly initialised reward networks (stage i uses seed + i).
    """

    def __init__(self, train_opt, device, seed=0):
        self.stages = parse_stages(train_opt)
        self.starts = [s['start_iter'] for s in self.stages]
        self.keys = [_network_key(s['reward']) for s in self.stages]
        self.device, self.seed = device, seed
        self.modules = {}  # network key -> built reward loss
        self.refreshed = set()  # keys whose networks co-evolution changed (kept and saved)
        self._pending = {}  # network key -> saved state waiting for the module to be built
        self.current_iter = 0

    # ---- schedule (pure) ----------------------------------------------------------------------
    def stage_index(self, current_iter):
        """Index of the latest stage with ``start_iter <= current_iter`` (0 before the first)."""
        return max(0, bisect.bisect_right(self.starts, current_iter) - 1)

    def blend(self, current_iter):
        """Active stages and their blend weights: ``[(index, weight), ...]`` summing to 1."""
        k = self.stage_index(current_iter)
        stage = self.stages[k]
        ramp = stage['ramp_iters']
        if k == 0 or ramp == 0:
            return [(k, 1.0)]
        a = min(1.0, (current_iter - stage['start_iter'] + 1) / ramp)
        return [(k, 1.0)] if a >= 1.0 else [(k - 1, 1.0 - a), (k, a)]

    def weights(self, current_iter):
        """Effective reward weights per stage index: ``{index: {'blend', 'lambda_score', 'lambda_map'}}``."""
        out = {}
        for index, b in self.blend(current_iter):
            reward = self.stages[index]['reward']
            out[index] = {'blend': b, **{k: reward.get(k, 1.0) for k in WEIGHT_KEYS}}
        return out

    # ---- reward losses ------------------------------------------------------------------------
    def _module(self, index):
        key = self.keys[index]
        if key not in self.modules:
            opt = {k: v for k, v in deepcopy(self.stages[index]['reward']).items() if k not in WEIGHT_KEYS}
            opt.setdefault('seed', self.seed + self.keys.index(key))  # equal networks, equal seed
            get_root_logger().info(f'CCL: building the reward of stage {index}: {opt.get("type")} '
                                   f'{opt.get("pretrain_path", "")}')
            try:
                self.modules[key] = build_loss(opt).to(self.device)
            except UserInputError as err:  # the loss cannot know which option key it was built from
                raise type(err)(f'{self.stages[index]["where"]}: {err}') from err
            if key in self._pending:
                self.modules[key].net.load_state_dict(self._pending.pop(key))
                self.refreshed.add(key)
        return self.modules[key]

    def step(self, current_iter):
        """Reward losses to use at ``current_iter``, with their weights set for this iteration.

        Returns:
            list[tuple[nn.Module, float]]: ``(reward loss, blend weight)``; the total reward loss
            is the weighted sum. Stages sharing a network appear once, with blended lambdas.
        """
        self.current_iter = current_iter
        groups = {}
        for index, b in self.blend(current_iter):
            groups.setdefault(self.keys[index], []).append((index, b))
        active = []
        for key, members in groups.items():
            total = sum(b for _, b in members)
            module = self._module(members[0][0])
            lambdas = {w: sum(b * self.stages[i]['reward'].get(w, 1.0) for i, b in members) / total
                       for w in WEIGHT_KEYS}
            module.set_weights(**lambdas)
            active.append((module, total))
        for key in list(self.modules):  # free reward nets of finished stages (unless co-evolved)
            if key not in groups and key not in self.refreshed:
                del self.modules[key]
        return active

    def has_ceiling(self, current_iter=None):
        """Whether a reward of the stages blended at ``current_iter`` (of any stage: None) has a
        ``reference_margin``, i.e. needs the frozen reference generator's output."""
        indices = range(len(self.stages)) if current_iter is None else [i for i, _ in self.blend(current_iter)]
        return any(self.stages[i]['reward'].get('reference_margin') is not None for i in indices)

    def rewards(self, sr, current_iter, gt=None, reference=None, lq=None):
        """Per-image reward of the stages blended at ``current_iter``: sum_k blend_k * loss_weight_k * R_k.

        Args:
            sr (Tensor): (N, 3, H, W) images in [0, 1]; the rewards are differentiable w.r.t. them.
            current_iter (int): Iteration; selects the stages, their blend weights and lambdas.
            gt (Tensor | None): (N, 3, H, W) GT of each image (full-reference scorers need it).
            reference (Tensor | None): (N / G, 3, H, W) the frozen reference generator's output for the
                input of each group of G consecutive images; a reward with ``reference_margin`` counts
                each image only up to its reference's reward + margin. None: uncapped.
            lq (Tensor | None): (N, 3, h, w) the input of each image, for LQ-conditioned reward models.

        Returns:
            tuple[Tensor, dict]: Rewards (N,), and for the log the blend-weighted means of the terms
            ``reward`` (before the ceiling and ``loss_weight``), ``score``, ``map_peak`` and ``capped``.
        """
        total, logs = 0, {}
        for module, weight in self.step(current_iter):
            reward, terms = module.image_rewards(sr, gt, reference, lq)
            total = total + weight * module.loss_weight * reward
            for name in LOG_TERMS:
                if name in terms:
                    logs[name] = logs.get(name, 0) + weight * terms[name].mean()
        return total, logs

    def active_module(self, current_iter=None):
        """The reward loss of the current (newest) stage."""
        return self._module(self.stage_index(self.current_iter if current_iter is None else current_iter))

    def log_values(self, current_iter):
        """Scalars for the log: stage index and blend weight of the newest stage."""
        blend = self.blend(current_iter)
        return {'ccl_stage': float(blend[-1][0]), 'ccl_blend': float(blend[-1][1])}

    def mark_refreshed(self, module):
        """Record that co-evolution changed ``module``'s network (it is then kept and saved)."""
        for key, m in self.modules.items():
            if m is module:
                self.refreshed.add(key)

    # ---- resume -------------------------------------------------------------------------------
    def state_dict(self):
        nets = {key: {k: v.detach().cpu().clone() for k, v in self.modules[key].net.state_dict().items()}
                for key in sorted(self.refreshed) if key in self.modules}
        nets.update({k: v for k, v in self._pending.items() if k not in nets})
        return {'iter': self.current_iter, 'starts': list(self.starts), 'refreshed_nets': nets}

    def load_state_dict(self, state):
        if not state:
            return
        if list(state.get('starts', self.starts)) != self.starts:
            get_root_logger().warning(f'CCL stage starts changed since the checkpoint: '
                                      f'{state["starts"]} -> {self.starts}; the option file wins')
        self.current_iter = int(state.get('iter', 0))
        for key, net_state in state.get('refreshed_nets', {}).items():
            if key in self.modules:
                self.modules[key].net.load_state_dict(net_state)
                self.refreshed.add(key)
            else:
                self._pending[key] = net_state
