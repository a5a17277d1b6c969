"""Reward-model losses: hand-computed values, reductions, base models of the alignment, tiny overfits."""
import math

import pytest
import torch
from basicsr.losses import build_loss

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.losses.finpercep_align_loss import FinPercepAlignLoss
from finpercep_basicsr.losses.finpercep_map_loss import FinPercepMapLoss
from finpercep_basicsr.losses.finpercep_rank_loss import FinPercepRankLoss
from finpercep_basicsr.models.finpercep_base_model import CheckpointMismatchError
from finpercep_basicsr.utils.errors import UserInputError

TINY = dict(type='FinPercepRewardNet', encoder='conv', channels=[8, 8, 16, 16], decoder_width=8, refine_ch=4,
            mlp_hidden=16)


def _net(stage=3, seed=0):
    torch.manual_seed(seed)
    opt = dict(TINY, stage=stage)
    opt.pop('type')
    return FinPercepRewardNet(**opt)


def test_map_loss_modes_by_hand():
    pred = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 2, 2)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    mask = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    # errors 0, .5, 0, 1: full mean .375; inside (idx 1, 2) mean .25; outside (idx 0, 3) mean .5
    assert FinPercepMapLoss('full')(pred, target).item() == pytest.approx(0.375)
    assert FinPercepMapLoss('masked')(pred, target, mask).item() == pytest.approx(0.25)
    assert FinPercepMapLoss('balanced', loss_weight=2)(pred, target, mask).item() == pytest.approx(1.5)
    # BCE(0.5, 1) = ln 2 on top of the L1 of 0.5
    half = torch.full((1, 1, 1, 1), 0.5)
    bce = FinPercepMapLoss('full', bce_weight=1)(half, torch.ones_like(half))
    assert bce.item() == pytest.approx(0.5 + math.log(2))
    two = FinPercepMapLoss('full', reduction='none')(torch.cat([pred, target]), torch.cat([target, target]))
    assert two.tolist() == pytest.approx([0.375, 0.0])
    with pytest.raises(ValueError, match='needs the swap mask'):
        FinPercepMapLoss('masked')(pred, target)
    with pytest.raises(ValueError, match='unknown mode'):
        FinPercepMapLoss('partial')
    with pytest.raises(ValueError, match='unsupported reduction'):
        FinPercepMapLoss(reduction='max')


def test_rank_loss_by_hand():
    loss = FinPercepRankLoss(margin_sr_syn=0.5, margin_syn_gt=0.2, reduction='none')
    out = loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.1]), torch.tensor([1.1, 0.0]))
    # sample 0: relu(.5 - 1) + relu(.2 - .1) = .1; sample 1: relu(.5 - .1) + relu(.2 + .1) = .7
    assert out.tolist() == pytest.approx([0.1, 0.7])
    assert build_loss({'type': 'FinPercepRankLoss', 'margin_sr_syn': 0.5, 'margin_syn_gt': 0.2,
                       'reduction': 'sum', 'loss_weight': 2})(
        torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.1]), torch.tensor([1.1, 0.0])).item() == pytest.approx(1.6)


def test_align_loss_explicit_targets_and_piqe_base():
    assert FinPercepAlignLoss()(torch.tensor([1.0, 3.0]), target=torch.tensor([2.0, 2.0])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match='needs explicit target scores'):
        FinPercepAlignLoss()(torch.tensor([1.0]), gt=torch.rand(1, 3, 8, 8))
    # PIQE is a real pyiqa metric that needs no weights; lower is better, so the target is -PIQE
    import pyiqa
    gt = torch.rand(2, 3, 64, 64)
    loss = FinPercepAlignLoss(base='pyiqa:piqe')
    expected = -pyiqa.create_metric('piqe', device='cpu')(gt).reshape(2)
    torch.testing.assert_close(loss.base_score(gt), expected)
    assert loss(expected + 1.0, gt=gt).item() == pytest.approx(1.0, rel=1e-4)


def test_align_loss_learned_pyiqa_metric_without_weights_fails_clearly(tmp_path):
    with pytest.raises(UserInputError, match="cannot build pyiqa metric 'musiq'.*weights_path"):
        FinPercepAlignLoss(base='pyiqa:musiq', weights_path=str(tmp_path / 'no_musiq.pth'))
    with pytest.raises(UserInputError, match='use pyiqa:<metric>, checkpoint:<path> or none'):
        FinPercepAlignLoss(base='clipiqa')


def test_align_loss_previous_stage_checkpoint(tmp_path):
    stage0 = _net(0, seed=3)
    path = tmp_path / 'net_reward_stage0.pth'
    torch.save({'params': stage0.state_dict()}, path)
    loss = FinPercepAlignLoss(base=f'checkpoint:{path}', network=dict(TINY, stage=0))
    gt = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loss.base_score(gt), stage0.eval()(gt)['score'])
    assert not any(p.requires_grad for p in loss.base.parameters())
    with pytest.raises(CheckpointMismatchError, match='missing keys: decoder'):
        FinPercepAlignLoss(base=f'checkpoint:{path}', network=dict(TINY, stage=2))
    with pytest.raises(UserInputError, match='needs `network`'):
        FinPercepAlignLoss(base=f'checkpoint:{path}')


def _overfit(loss_fn, steps=25):
    net = _net(3)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 32)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = net(images)
        loss = loss_fn(out)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_each_loss_decreases_on_a_tiny_overfit():
    target = torch.zeros(3, 1, 32, 32)
    target[:, :, 8:24, 8:24] = 1
    mask = target.clone()
    for mode in ('full', 'balanced'):
        losses = _overfit(lambda out, m=mode: FinPercepMapLoss(m)(out['pdm'], target, mask))
        assert losses[-1] < 0.6 * losses[0], (mode, losses[0], losses[-1])
    rank = FinPercepRankLoss(margin_sr_syn=1.0, margin_syn_gt=1.0)
    losses = _overfit(lambda out: rank(out['score'][0:1], out['score'][1:2], out['score'][2:3]))
    assert losses[-1] < 0.3 * losses[0]
    align = FinPercepAlignLoss()
    losses = _overfit(lambda out: align(out['score'], target=torch.tensor([2.0, -1.0, 0.5])), steps=40)
    assert losses[-1] < 0.3 * losses[0]
