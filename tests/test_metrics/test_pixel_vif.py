"""Pixel-domain VIF: 1 for an identical image, lower the more a distortion destroys, finite on flat crops."""
import pytest
import torch

from finpercep_basicsr.evaluation.sr_evaluation import build_metrics


def test_vif_p_orders_distortions_and_stays_finite_on_a_flat_crop():
    metrics, notes = build_metrics(['vif_p'])
    vif, lower_better = metrics['vif_p']
    assert notes == [] and lower_better is False
    torch.manual_seed(0)
    gt = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64), 3, 1, 1)
    mild = (gt + 0.01 * torch.randn_like(gt)).clamp(0, 1)
    strong = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1)
    scores = [vif(x, gt) for x in (gt, mild, strong)]
    assert all(s.shape == (2,) for s in scores)
    assert torch.allclose(scores[0], torch.ones(2), atol=1e-4)
    assert (scores[0] > scores[1]).all() and (scores[1] > scores[2]).all()
    flat = torch.full((1, 3, 64, 64), 0.4)  # a flat sky: the wavelet VIF's float32 pseudo-inverse fails here
    assert torch.isfinite(vif((flat + 0.002 * torch.randn_like(flat)).clamp(0, 1), flat)).all()
    with pytest.raises(ValueError, match=r'vif_p needs images of at least 41x41 px, got \(32, 32\)'):
        vif(gt[..., :32, :32], gt[..., :32, :32])
