"""The shipped reward model and its judge: each checkpoint matches its sha256, loads strictly from its option file,
scores a real photo from the repository root (a sharpened copy lower, its map brighter), and a mismatched
checkpoint exits 2."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from tests.helpers.opt import REPO
from skimage import data as skdata

from finpercep_basicsr.evaluation.score import load_reward_net
from finpercep_basicsr.evaluation.score import main as score_main

OPTION_FILE = os.path.join('options', 'pretrained', 'finpercep_rm.yml')
JUDGE_FILE = os.path.join('options', 'pretrained', 'finpercep_rm_judge.yml')
SHIPPED = pytest.mark.parametrize('option_file', [OPTION_FILE, JUDGE_FILE], ids=['rm', 'judge'])


def _option(option_file=OPTION_FILE):
    with open(os.path.join(REPO, option_file)) as f:
        return yaml.safe_load(f)


@SHIPPED
def test_checkpoint_matches_its_sha256(option_file):
    path = os.path.join(REPO, _option(option_file)['path']['pretrain_network_reward'])
    with open(path + '.sha256') as f:
        expected = f.read().split()[0]
    with open(path, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == expected
    assert os.path.getsize(path) <= 25 * 2 ** 20


@pytest.mark.parametrize('option_file, sees_oversharpening', [(OPTION_FILE, True), (JUDGE_FILE, False)],
                         ids=['rm', 'judge'])
def test_scores_a_real_photo_from_the_repository_root(tmp_path, monkeypatch, option_file, sees_oversharpening):
    monkeypatch.chdir(REPO)  # the option file's paths are relative to the repository root
    photo = skdata.astronaut()[100:292, 150:342]
    blurred = cv2.GaussianBlur(photo, (0, 0), 1.0)
    sharpened = np.clip(photo + 3.0 * (photo.astype(np.float32) - blurred), 0, 255).astype(np.uint8)
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name, img in (('photo.png', photo), ('sharpened.png', sharpened)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert score_main(['--opt', option_file, str(folder), '--out', str(tmp_path / 'scored')]) == 0
    with open(tmp_path / 'scored' / 'scores.json') as f:
        scores = {os.path.basename(r['file']): r for r in json.load(f)['results']}
    assert all(np.isfinite(r['score']) for r in scores.values())
    net, _ = load_reward_net(opt=option_file)  # strict: every key of the checkpoint fits the option file
    with torch.no_grad():
        maps = [net(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)['pdm'].mean().item()
                for img in (photo, sharpened)]
    if sees_oversharpening:  # the judge's families are disjoint from the RM's: no over-sharpening (model card)
        assert scores['photo.png']['score'] > scores['sharpened.png']['score']
        assert maps[1] > maps[0]


@SHIPPED
def test_a_checkpoint_of_another_architecture_exits_2(tmp_path, monkeypatch, capsys, option_file):
    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    monkeypatch.chdir(REPO)
    other = FinPercepRewardNet(stage=2, pretrained=False)
    path = tmp_path / 'other.pth'
    torch.save({'params': other.state_dict()}, path)
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.full((64, 64, 3), 128, np.uint8))
    assert score_main(['--opt', option_file, '--ckpt', str(path), str(img), '--out', str(tmp_path / 'o')]) == 2
    assert str(path) in capsys.readouterr().err
