"""A byte-bounded LRU cache of what a reward-model training step recomputes identically for the same sample.

With ``freeze_encoder`` the encoder's early, high-resolution steps and the texture statistics are fixed functions of
the image (``FinPercepRewardNet.frozen_features``). A sample seen again with the same crop and flips (the FGR
samples are usually their crop's size, so only the four flip/transpose variants differ) gets them from here, and the
step computes only what trains.
"""
from collections import OrderedDict

import torch


def _tensors(frozen):
    """The distinct tensors of a ``frozen_features`` dict (the hidden state is often the last level itself)."""
    unique = {}
    for t in [frozen['hidden'], *frozen['levels'], frozen['stats']]:
        if t is not None:
            unique.setdefault(id(t), t)
    return list(unique.values())


def _nbytes(frozen):
    return sum(t.numel() * t.element_size() for t in _tensors(frozen))


def _take(frozen, i):
    """Sample ``i`` of a batched ``frozen_features`` dict, copied (so the batch can be freed) once per tensor."""
    copies = {}

    def one(t):
        if t is None:
            return None
        if id(t) not in copies:
            copies[id(t)] = t[i:i + 1].clone()
        return copies[id(t)]

    return {'steps': frozen['steps'], 'hidden': one(frozen['hidden']), 'levels': [one(t) for t in frozen['levels']],
            'stats': one(frozen['stats'])}


def _stack(items):
    cat = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
    levels = [cat(list(level)) for level in zip(*[it['levels'] for it in items])]
    # the hidden state kept once as the last level is batched once too
    shared = bool(levels) and all(it['hidden'] is it['levels'][-1] for it in items)
    return {'steps': items[0]['steps'], 'hidden': levels[-1] if shared else cat([it['hidden'] for it in items]),
            'levels': levels, 'stats': cat([it['stats'] for it in items])}


class FeatureCache:
    """Per-sample frozen features, least recently used dropped first once ``max_bytes`` is exceeded.

    Args:
        max_bytes (int): Memory budget of the stored tensors (they stay on the model's device).
    """

    def __init__(self, max_bytes):
        self.max_bytes = int(max_bytes)
        self.items = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self):
        return len(self.items)

    def _put(self, key, frozen):
        size = _nbytes(frozen)
        if size > self.max_bytes:
            return
        if key in self.items:
            self.bytes -= _nbytes(self.items.pop(key))
        self.items[key] = frozen
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.bytes -= _nbytes(self.items.popitem(last=False)[1])

    def batch(self, keys, images, compute):
        """The batched frozen features of ``images`` (B, 3, H, W), one key per image; ``compute(images)`` runs for the
        images not cached, in one call, and its per-sample results are stored."""
        found = {}
        for i, key in enumerate(keys):
            if key in self.items:
                self.items.move_to_end(key)
                found[i] = self.items[key]
        missing = [i for i in range(len(keys)) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            fresh = compute(images[missing])
            for j, i in enumerate(missing):
                found[i] = _take(fresh, j)
                self._put(keys[i], found[i])
        return _stack([found[i] for i in range(len(keys))])

    def hit_rate(self):
        """Share of the images served from the cache so far (0 before any)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
