"""Gradient descent of a differentiable metric on an image's pixels: does its gradient lower the metric?"""
import torch


def descend(metric, x0, steps=15, lr=1e-3):
    """``steps`` Adam steps (``lr``) lowering ``metric(x)`` from ``x0`` (B, 3, H, W) in [0, 1]; the result, clamped."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        metric(x.clamp(0, 1)).sum().backward()
        opt.step()
    return x.detach().clamp(0, 1)
