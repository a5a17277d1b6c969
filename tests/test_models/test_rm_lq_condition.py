"""The LQ-conditioned reward model: it starts as its no-reference self, scores with and without an LQ, and the
dataset, the training step and the RLHF reward hand it the right LQ."""
import numpy as np
import pytest
import torch
from tests.helpers.fgr import block_means, make_fgr_folder
from tests.test_models.test_rm_model import _opt

from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.data.finpercep_fgr_dataset import FinPercepFGRDataset
from finpercep_basicsr.losses.finpercep_reward_loss import FinPercepRewardLoss
from finpercep_basicsr.models.finpercep_rm_model import FinPercepRMModel
from finpercep_basicsr.utils.errors import UserInputError

TINY = dict(encoder='conv', channels=[8, 8, 16, 16], decoder_width=8, refine_ch=4, mlp_hidden=16, stage=3)


def _grown(seed=0):
    """A no-reference net and the LQ-conditioned net grown from its weights, whose LQ branches were then trained
    away from zero (perturbed)."""
    torch.manual_seed(seed)
    base = FinPercepRewardNet(**TINY).eval()
    net = FinPercepRewardNet(lq_condition=True, **TINY).eval()
    missing = net.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(('decoder.lq_texture', 'decoder.lq_refine')) for k in missing)
    return base, net


def test_a_grown_lq_net_starts_as_its_no_reference_self_and_scores_with_and_without_an_lq():
    base, net = _grown()
    x, lq = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        ref, start = base(x), net(x, lq=lq)
        assert torch.equal(ref['pdm'], start['pdm']) and torch.equal(ref['score'], start['score'])
        for p in net.decoder.lq_refine[-1].parameters():
            p.normal_(0, 0.5)
        for p in net.decoder.lq_texture.body[-1].parameters():
            p.normal_(0, 0.5)
        with_lq, without = net(x, lq=lq), net(x)
        other_lq = net(x, lq=lq.flip(-1))
    assert torch.equal(without['pdm'], ref['pdm']) and torch.equal(without['score'], ref['score'])
    assert not torch.allclose(with_lq['pdm'], ref['pdm']) and not torch.allclose(with_lq['pdm'], other_lq['pdm'])
    # an LQ at the image's size is taken as already upsampled: the same as the network upsampling it
    up = net.upsampled_lq(lq, x)
    torch.testing.assert_close(net(x, lq=up)['pdm'], with_lq['pdm'])
    with pytest.raises(ValueError, match='does not fit'):
        net(x, lq=torch.rand(1, 3, 10, 10))
    with pytest.raises(ValueError, match='not LQ-conditioned'):
        base(x, lq=lq)
    with pytest.raises(ValueError, match='needs a map'):
        FinPercepRewardNet(**{**TINY, 'stage': 0}, lq_condition=True)


def test_the_dataset_crops_the_lq_with_its_sample(tmp_path):
    root = make_fgr_folder(str(tmp_path / 'fgr'), num=3, size=32, lq=True)
    train = FinPercepFGRDataset({'dataroot': root, 'phase': 'train', 'gt_size': 16, 'use_lq': True})
    for i in range(12):
        item = train[i % 3]
        assert item['lq'].shape == (3, 4, 4)
        # the LQ is the GT's 4x4 block means; cropped on its grid and flipped alike, it still is (to 8-bit rounding)
        gt = item['gt'].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(item['lq'].permute(1, 2, 0).numpy(), block_means(gt, 4), atol=1.5 / 255)
    assert 'lq' not in FinPercepFGRDataset({'dataroot': root, 'phase': 'val'})[0]
    no_lq = make_fgr_folder(str(tmp_path / 'old'), num=2, size=32)
    with pytest.raises(UserInputError, match='lack lq/<name>.png.*rerun its build command'):
        FinPercepFGRDataset({'dataroot': no_lq, 'use_lq': True})
    with pytest.raises(UserInputError, match='not a multiple of the LQ scale'):
        FinPercepFGRDataset({'dataroot': root, 'phase': 'train', 'gt_size': 18, 'use_lq': True})[0]


def _lq_model(tmp_path, root, **train):
    opt = _opt(tmp_path, root, **train)
    opt['network_reward'].update(lq_condition=True)
    for dataset in opt['datasets'].values():
        dataset['use_lq'] = True
    return FinPercepRMModel(opt)


def test_a_training_step_gives_the_lq_and_lq_dropout_takes_it_away(tmp_path):
    root = make_fgr_folder(str(tmp_path / 'fgr'), num=2, size=32, lq=True)
    batch = torch.utils.data.default_collate([FinPercepFGRDataset({'dataroot': root, 'phase': 'val',
                                                                   'use_lq': True})[i] for i in range(2)])
    for dropout, trained in ((0.0, True), (1.0, False)):
        model = _lq_model(tmp_path / str(dropout), root, lq_dropout=dropout)
        net = model.get_bare_model(model.net_reward)
        lq_params = {k: v.clone() for k, v in net.state_dict().items() if '.lq_' in k}
        model.feed_data(batch)
        model.optimize_parameters(1)
        moved = any(not torch.equal(lq_params[k], v) for k, v in net.state_dict().items() if k in lq_params)
        assert moved == trained  # the LQ branches learn only from batches scored with the LQ
    with pytest.raises(UserInputError, match='lq_dropout'):
        _lq_model(tmp_path / 'bad', root, lq_dropout=2)
    model = _lq_model(tmp_path / 'nolq', root)
    model.feed_data({k: v for k, v in batch.items() if k != 'lq'})
    with pytest.raises(UserInputError, match='use_lq: true'):
        model.optimize_parameters(1)


def test_the_rlhf_reward_judges_each_output_against_its_own_lq(tmp_path):
    base, net = _grown()
    with torch.no_grad():
        for p in net.decoder.lq_refine[-1].parameters():
            p.normal_(0, 0.5)
    torch.save({'params': net.state_dict()}, tmp_path / 'rm.pth')
    loss = FinPercepRewardLoss({'type': 'FinPercepRewardNet', 'lq_condition': True, **TINY},
                               pretrain_path=str(tmp_path / 'rm.pth'), param_key='params', reference_margin=0.0)
    sr, lq = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 8, 8)
    with_lq = loss.image_rewards(sr, lq=lq)[0]
    with torch.no_grad():
        out = net(sr, lq=lq)
    torch.testing.assert_close(with_lq, out['score'] + 1 - out['pdm'].flatten(1).amax(dim=1))  # map_reduce max
    assert not torch.allclose(with_lq, loss.image_rewards(sr)[0])
    # the ceiling scores each of the 2 references with the LQ of its group of 2 outputs
    reference = sr[::2]
    capped = loss.image_rewards(sr, reference=reference, lq=lq)[0]
    ceiling = loss.rewards(reference, lq[::2])['reward'].repeat_interleave(2)
    torch.testing.assert_close(capped, torch.minimum(with_lq, ceiling))


def test_lr_mult_gives_new_branches_their_own_rate(tmp_path):
    root = make_fgr_folder(str(tmp_path / 'fgr'), num=2, size=32, lq=True)
    model = _lq_model(tmp_path, root, lr_mult={'decoder.lq_*': 10})
    lr = model.opt['train']['optim_reward']['lr']
    net = model.get_bare_model(model.net_reward)
    by_id = {id(p): n for n, p in net.named_parameters()}
    rates = {by_id[id(p)]: g['lr'] for g in model.optimizer_reward.param_groups for p in g['params']}
    assert {n for n, r in rates.items() if r == pytest.approx(10 * lr)} == {n for n in rates if '.lq_' in n}
    assert rates['decoder.head.0.weight'] == pytest.approx(lr)
    with pytest.raises(UserInputError, match="'decoder.nothing_\\*' matches no trainable parameter"):
        _lq_model(tmp_path / 'b', root, lr_mult={'decoder.nothing_*': 2})
    with pytest.raises(UserInputError, match='positive numbers'):
        _lq_model(tmp_path / 'c', root, lr_mult={'decoder.lq_*': 0})
