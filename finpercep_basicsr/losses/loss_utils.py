"""Helpers shared by the FinPercep losses."""

REDUCTIONS = ('mean', 'sum', 'none')


def check_reduction(name, reduction):
    """Raise ValueError naming the loss when ``reduction`` is not one BasicSR losses use."""
    if reduction not in REDUCTIONS:
        raise ValueError(f'{name}: unsupported reduction {reduction!r}; use one of {", ".join(REDUCTIONS)}')


def reduce_batch(loss, reduction):
    """Reduce a per-sample loss (B,) by 'mean' | 'sum' | 'none'."""
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    return loss
