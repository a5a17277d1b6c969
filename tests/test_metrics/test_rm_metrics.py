"""Reward-model metrics against hand-computed values, and their BasicSR registry names."""
import math

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.metrics import cc, kld, map_auc, map_mae, nss, plcc, srcc, triplet_accuracy


def test_srcc_and_plcc_by_hand():
    # ranks differ by d = (0, 1, -1, 0): 1 - 6 * 2 / (4 * 15) = 0.8
    assert srcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert srcc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # deviations (-1, 0, 1) and (-7/3, -1/3, 8/3): 5 / sqrt(2 * 114 / 9)
    assert plcc([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert plcc([1, 1, 1], [1, 2, 3]) == 0.0


def test_triplet_accuracy_by_hand():
    assert triplet_accuracy(torch.tensor([0., 1, 2]), torch.tensor([1., 0, 3]), torch.tensor([2., 3, 3])) == \
        pytest.approx(1 / 3)


def test_map_auc_by_hand_ties_and_constant():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered
    assert map_auc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[0, 0, 1, 1]])) == pytest.approx(0.75)
    assert map_auc(np.array([[0.5, 0.5]]), np.array([[0, 1]])) == pytest.approx(0.5)
    assert map_auc(np.zeros((2, 1, 4, 4)), np.eye(4)[None, None].repeat(2, 0)) == pytest.approx(0.5)
    assert math.isnan(map_auc(np.array([[0.2, 0.3]]), np.array([[1, 1]])))
    # pooled over images of different sizes
    assert map_auc([np.array([[0.9]]), np.array([[0.1, 0.2], [0.3, 0.95]])],
                   [np.array([[1.0]]), np.array([[0.0, 0.0], [0.0, 1.0]])]) == pytest.approx(1.0)


def test_map_mae_nss_cc_kld_by_hand():
    assert map_mae(torch.tensor([[[[0.0, 0.5]]]]), torch.tensor([[[[1.0, 0.0]]]])) == pytest.approx(0.75)
    # map (0, 0, 1, 1): mean 0.5, std 0.5 -> standardised value at the fixated pixel is 1
    assert nss(np.array([[0, 0, 1, 1.0]]), np.array([[0, 0, 0, 1]])) == pytest.approx(1.0)
    assert nss(np.array([[0.3, 0.3]]), np.array([[0, 1]])) == 0.0
    # per image +1 and -1, averaged (a list holds one map per image)
    assert cc([np.array([1.0, 2, 3])] * 2, [np.array([2.0, 4, 6]), np.array([3.0, 2, 1])]) == pytest.approx(0.0)
    assert cc(np.array([[1.0, 2, 3]]), np.array([[2.0, 4, 7]])) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    # label (1, 0) vs uniform prediction: KL = 1 * log(1 / 0.5)
    assert kld(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])) == pytest.approx(math.log(2), rel=1e-6)
    assert kld(np.array([[0.2, 0.8]]), np.array([[0.2, 0.8]])) == pytest.approx(0.0, abs=1e-9)


def test_registered_names_work_through_basicsr():
    for name in ('FinPercepSRCC', 'FinPercepPLCC', 'FinPercepTripletAcc', 'FinPercepMapMAE', 'FinPercepMapAUC',
                 'FinPercepNSS', 'FinPercepCC', 'FinPercepKLD'):
        assert name in METRIC_REGISTRY
    data = {'score': [1, 2, 3, 4], 'label': [1, 3, 2, 4], 'pdm': [[0.1, 0.4, 0.35, 0.8]], 'mask': [[0, 0, 1, 1]]}
    assert calculate_metric(data, {'type': 'FinPercepSRCC'}) == pytest.approx(0.8)
    assert calculate_metric(data, {'type': 'FinPercepMapAUC'}) == pytest.approx(0.75)
