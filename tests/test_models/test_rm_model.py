"""FinPercepRMModel: encoder freezing and lr, stage growth from a checkpoint, validation metrics, TB images,
best checkpoints."""
import glob
import os
from copy import deepcopy

import pytest
import torch
import yaml
from tests.helpers.opt import FIXTURES, run_module, write_options
from torch.utils.data import DataLoader

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.data.finpercep_fgr_dataset import FinPercepFGRDataset
from finpercep_basicsr.models.finpercep_base_model import CheckpointMismatchError
from finpercep_basicsr.models.finpercep_rm_model import FinPercepRMModel
from finpercep_basicsr.utils.errors import UserInputError


def _opt(tmp_path, dataroot, **train):
    with open(os.path.join(FIXTURES, 'train_rm_tiny.yml')) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    for phase, dataset in opt['datasets'].items():
        dataset.update(dataroot=dataroot, phase=phase.split('_')[0])
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    opt['train'].update(train)
    return opt


def _batch(dataroot):
    dataset = FinPercepFGRDataset({'name': 'fgr_tiny_val', 'dataroot': dataroot, 'phase': 'val'})
    loader = DataLoader(dataset, batch_size=2)
    return loader, next(iter(loader))


class _TB:
    def __init__(self):
        self.scalars, self.images = {}, {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = value

    def add_image(self, tag, img, step):
        self.images[tag] = img


def test_frozen_encoder_stays_fixed_and_the_rest_trains(tmp_path, fgr_folder):
    model = FinPercepRMModel(_opt(tmp_path, fgr_folder, freeze_encoder=True))
    net = model.net_reward
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _, batch = _batch(fgr_folder)
    model.feed_data(batch)
    model.optimize_parameters(1)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith('encoder.'))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith('decoder.'))
    assert not net.encoder.training and set(model.log_dict) == {'l_map', 'l_rank'}


def test_encoder_gets_its_own_learning_rate(tmp_path, fgr_folder):
    model = FinPercepRMModel(_opt(tmp_path, fgr_folder, encoder_lr_mult=0.1))
    groups = model.optimizer_reward.param_groups
    assert [g['lr'] for g in groups] == pytest.approx([1e-3, 1e-4])
    n_encoder = sum(p.numel() for p in model.net_reward.encoder.parameters())
    assert sum(p.numel() for p in groups[1]['params']) == n_encoder


def test_ema_warms_up_and_fixed_decay_stays_available(tmp_path, fgr_folder):
    _, batch = _batch(fgr_folder)
    moved = {}
    for warmup in (True, False):
        torch.manual_seed(0)
        model = FinPercepRMModel(_opt(tmp_path, fgr_folder, ema_decay=0.999, ema_warmup=warmup))
        start = {k: v.clone() for k, v in model.net_reward_ema.state_dict().items() if v.is_floating_point()}
        model.feed_data(batch)
        for it in (1, 2, 3):
            model.optimize_parameters(it)
        net, ema = model.net_reward.state_dict(), model.net_reward_ema.state_dict()
        # fraction of the way the EMA moved from its start towards the trained weights
        key = max(start, key=lambda k: (net[k] - start[k]).abs().sum())
        moved[warmup] = float((ema[key] - start[key]).norm() / (net[key] - start[key]).norm())
    assert model.ema_decay_at(1) == 0.999  # the last model ran without warm-up
    assert moved[False] < 0.01 < 0.3 < moved[True]
    model.opt['train']['ema_warmup'] = True
    assert model.ema_decay_at(0) == pytest.approx(0.1) and model.ema_decay_at(10 ** 6) == 0.999


def test_stage_zero_rejects_a_map_loss(tmp_path, fgr_folder):
    opt = _opt(tmp_path, fgr_folder)
    opt['network_reward']['stage'] = 0
    with pytest.raises(UserInputError, match='stage 0 has no map; remove train.map_opt'):
        FinPercepRMModel(opt)


def test_stage_growth_from_a_checkpoint_and_a_clear_strict_mismatch(tmp_path, fgr_folder):
    opt = _opt(tmp_path, fgr_folder)
    opt['network_reward']['stage'] = 2
    stage2 = FinPercepRMModel(opt)
    _, batch = _batch(fgr_folder)
    stage2.feed_data(batch)
    stage2.optimize_parameters(1)
    stage2.save(0, 1)
    ckpt = str(tmp_path / 'models' / 'net_reward_1.pth')

    opt3 = _opt(tmp_path, fgr_folder)
    opt3['path'].update(pretrain_network_reward=ckpt, strict_load_reward=False, param_key_reward='params')
    stage3 = FinPercepRMModel(opt3)
    trained = stage2.get_bare_model(stage2.net_reward).state_dict()
    grown = stage3.net_reward.state_dict()
    assert all(torch.equal(grown[k], v) for k, v in trained.items())
    assert any(k.startswith('decoder.refine.') for k in set(grown) - set(trained))

    opt3 = _opt(tmp_path, fgr_folder)
    opt3['path'].update(pretrain_network_reward=ckpt, strict_load_reward=True, param_key_reward='params')
    with pytest.raises(CheckpointMismatchError, match=r'missing keys: decoder\.refine\.'):
        FinPercepRMModel(opt3)


def test_validation_logs_metrics_images_and_saves_best_checkpoints(tmp_path, fgr_folder):
    opt = _opt(tmp_path, fgr_folder)
    del opt['val']['metrics']  # the default set: every FinPercep metric
    model = FinPercepRMModel(deepcopy(opt))  # BasicSR's setup_schedulers pops from the options
    loader, _ = _batch(fgr_folder)
    tb = _TB()
    model.validation(loader, 3, tb, False)
    assert set(model.metric_results) == {'srcc', 'plcc', 'triplet_acc', 'map_mae', 'map_auc', 'nss', 'cc', 'kld'}
    assert 'metrics/fgr_tiny_val/map_auc' in tb.scalars
    (tag, panel), = tb.images.items()
    assert tag == 'pdm/fgr_tiny_val/0000' and panel.shape == (3, 32, 96)  # image | label | prediction
    for key in model.metric_results:
        if model.metric_results[key] == model.metric_results[key]:  # NaN never counts as best
            assert os.path.isfile(tmp_path / 'models' / f'net_reward_best_{key}.pth'), key
    best = torch.load(tmp_path / 'models' / 'net_reward_best_map_mae.pth', weights_only=True)
    assert set(best) == {'params', 'params_ema'}
    # the best values survive a save/resume round trip of the training state
    state = model.extra_training_state()
    fresh = FinPercepRMModel(opt)
    fresh.load_extra_training_state(state)
    assert fresh.best_metric_results['fgr_tiny_val']['map_mae']['iter'] == 3


@pytest.mark.slow
def test_stage_options_chain_through_the_train_entry(tmp_path, fgr_folder):
    """Stage 0 (global only) trains, then stage 3 starts from its checkpoint, as options/train/FinPercepRM does."""
    common = dict(dataroot=fgr_folder, train__total_iter=2, logger__save_checkpoint_freq=2, val__val_freq=2)
    s0 = write_options(tmp_path / 's0.yml', name='rm_s0', network_reward__stage=0, train__map_opt=None, **common)
    first = run_module(['finpercep_basicsr.train', '-opt', s0], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = tmp_path / 'experiments' / 'rm_s0' / 'models' / 'net_reward_latest.pth'
    s3 = write_options(tmp_path / 's3.yml', name='rm_s3', path__pretrain_network_reward=str(ckpt),
                       path__strict_load_reward=False, **common)
    second = run_module(['finpercep_basicsr.train', '-opt', s3], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    models = tmp_path / 'experiments' / 'rm_s3' / 'models'
    assert os.path.isfile(models / 'net_reward_latest.pth')
    assert glob.glob(str(models / 'net_reward_best_*.pth'))
    log = open(glob.glob(str(tmp_path / 'experiments' / 'rm_s3' / 'train_*.log'))[0]).read()
    assert f'Loading FinPercepRewardNet from {ckpt}' in log


def test_rank_loss_gets_the_scores_in_the_order_sr_syn_gt(tmp_path, fgr_folder):
    from finpercep_basicsr.losses.finpercep_rank_loss import FinPercepRankLoss
    model = FinPercepRMModel(_opt(tmp_path, fgr_folder, map_opt=None))
    _, batch = _batch(fgr_folder)
    net = model.get_bare_model(model.net_reward)
    with torch.no_grad():  # scores far apart, beyond the margins: the order of the three then matters
        net.score_head[2].weight.mul_(300)
    state = deepcopy(net.state_dict())
    model.feed_data(batch)
    model.optimize_parameters(1)
    net.load_state_dict(state)  # the step's loss was computed with the weights before it
    # the model scores the three kinds in one forward (one BatchNorm batch); so does the test
    scores = net(torch.cat([batch['sr'], batch['syn'], batch['gt']]))['score'].detach().chunk(3)
    expected = FinPercepRankLoss(margin_sr_syn=0.1, margin_syn_gt=0.1)(*scores)
    torch.testing.assert_close(torch.as_tensor(model.log_dict['l_rank']), expected)
    swapped = FinPercepRankLoss(margin_sr_syn=0.1, margin_syn_gt=0.1)(scores[2], scores[1], scores[0])
    assert not torch.isclose(swapped, expected)


def test_a_short_overfit_raises_triplet_accuracy_and_lowers_map_mae(tmp_path, fgr_folder):
    from finpercep_basicsr.metrics.finpercep_rm_metric import map_mae, triplet_accuracy
    torch.manual_seed(0)
    model = FinPercepRMModel(_opt(tmp_path, fgr_folder, ema_decay=0, optim_reward={'type': 'Adam', 'lr': 1e-2}))
    loader, batch = _batch(fgr_folder)
    net = model.get_bare_model(model.net_reward)

    def measure():
        net.eval()
        with torch.no_grad():
            out = net(torch.cat([batch['sr'], batch['syn'], batch['gt']]))
        net.train()
        s_sr, s_syn, s_gt = (s.numpy() for s in out['score'].chunk(3))
        pdm_syn = out['pdm'].chunk(3)[1]
        return (triplet_accuracy(score_sr=s_sr, score_syn=s_syn, score_gt=s_gt),
                map_mae(pdm=list(pdm_syn[:, 0].numpy()), pdm_gt=list(batch['pdm'][:, 0].numpy())))

    acc0, mae0 = measure()
    for it in range(20):
        model.feed_data(batch)
        model.optimize_parameters(it + 1)
    acc1, mae1 = measure()
    assert mae1 < mae0
    assert acc1 > acc0


def test_keep_checkpoints_keeps_the_newest_saves_and_they_resume(tmp_path, fgr_folder):
    opt = _opt(tmp_path, fgr_folder)
    opt['logger']['keep_checkpoints'] = 1
    model = FinPercepRMModel(deepcopy(opt))  # BasicSR pops keys out of the option dict it is given
    _, batch = _batch(fgr_folder)
    for it in (1, 2, 3):
        model.feed_data(batch)
        model.optimize_parameters(it)
        model.save(0, it)
    model.save(0, -1)
    assert sorted(os.listdir(tmp_path / 'models')) == ['net_reward_3.pth', 'net_reward_latest.pth']
    assert os.listdir(tmp_path / 'states') == ['3.state']
    state = torch.load(tmp_path / 'states' / '3.state', weights_only=False)
    FinPercepRMModel(deepcopy(opt)).resume_training(state)  # the kept state loads into a fresh model
    opt['logger']['keep_checkpoints'] = 0
    with pytest.raises(UserInputError, match='logger.keep_checkpoints'):
        FinPercepRMModel(opt)
