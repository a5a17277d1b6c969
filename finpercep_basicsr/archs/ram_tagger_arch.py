"""RAM / DAPE image tagger: the prompts and image embeddings of SeeSR (and OSEDiff's tag prompts).

SeeSR (``test_seesr.py``) and OSEDiff (``test_osediff.py``) tag each LQ image with RAM (Recognize
Anything, Swin-L at 384 px) carrying SeeSR's DAPE fine-tuning, and use
- the tags above their per-class thresholds, joined with ``', '`` (SeeSR's ``ram_lora.generate_tag``),
  as the text prompt (both append a user suffix, e.g. SeeSR's ``', , clean, high-resolution, 8k'``);
- ``image_proj(visual_encoder(x))`` (RAM's ``generate_image_embeds``; ``condition_forward`` with
  ``only_feature``), (B, 1 + 12 * 12, 512) at 384 px, as the context of SeeSR's image cross-attention.
Preprocessing as the releases: resize to 384 x 384 (bilinear on the tensor; the releases' torchvision
did not antialias tensors) and ImageNet normalisation.

Weights the user supplies (nothing is downloaded):
- ``ram_path``: RAM's ``ram_swin_large_14m.pth`` (``{'model': state_dict}``). The tagger reads
  ``visual_encoder.*`` (``ram_swin``), ``image_proj``, ``label_embed`` (T, 512), ``wordvec_proj``
  (512 -> 768), ``tagging_head.*`` (``ram_tag_head``; RAM's loader renames ``vision_multi`` to it, as
  this one does) and ``fc`` (768 -> 1). The Tag2Text branches (``tag_encoder.*``, ``text_decoder.*``)
  are not run and are skipped; any other difference is an error.
- ``dape_path`` (optional): SeeSR's ``DAPE.pth``, a flat state dict of SeeSR's ``RAMLora`` that its
  inference loads over RAM with ``strict=False``. ``RAMLora`` is RAM with loralib adapters (rank 8,
  ``lora_alpha`` 1): ``lora.MergedLinear`` on every Swin ``attn.qkv`` (q and v) and ``lora.Linear`` on
  the tagging head's ``query``/``key``. Its ``*.lora_A``/``*.lora_B`` are merged into the weights
  (what loralib's ``eval()`` does); any full tensors it carries replace RAM's first.
- ``tag_list_path``: RAM's ``ram_tag_list.txt`` (4585 English tags, one a line; recognize-anything
  ``ram/data``), and ``threshold_path`` (optional): ``ram_tag_list_threshold.txt`` (one threshold a
  line; RAM's class thresholds, which are not in the checkpoint); without it every class uses
  ``threshold`` (0.68, RAM's default).
"""
import os

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from finpercep_basicsr.archs.ram_swin import RAMSwinEncoder
from finpercep_basicsr.archs.ram_tag_head import RAMTaggingHead, merge_lora
from finpercep_basicsr.utils.checkpoint import describe_state_dict_mismatch, load_checkpoint
from finpercep_basicsr.utils.errors import UserInputError

OPT = 'network_g.tagger'
UNUSED_PREFIXES = ('tag_encoder.', 'text_decoder.')  # Tag2Text captioning branches of RAM's checkpoint
DERIVED = ('relative_position_index', 'attn_mask')  # rebuilt from the config (RAM's loader drops them too)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _read_lines(path, key, what):
    if not path or not os.path.isfile(path):
        raise UserInputError(f'{what} not found: {path} ({OPT}.{key})')
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    if not lines:
        raise UserInputError(f'{what} {path} is empty ({OPT}.{key})')
    return lines


def _read_state(path, key, what):
    """Flat state dict of a RAM-family file, keys in the released naming."""
    if not path or not os.path.isfile(path):
        raise UserInputError(f'{what} not found: {path} ({OPT}.{key})')
    loaded = load_checkpoint(path, what=f'{what} ({OPT}.{key})')
    for wrap in ('model', 'params', 'state_dict'):  # RAM saves {'model': ...}, BasicSR {'params': ...}
        if isinstance(loaded, dict) and isinstance(loaded.get(wrap), dict):
            loaded = loaded[wrap]
            break
    if not isinstance(loaded, dict):
        raise UserInputError(f'{path} is not a state dict ({OPT}.{key})')
    return {k.removeprefix('module.').replace('vision_multi', 'tagging_head'): v for k, v in loaded.items()
            if not k.endswith(DERIVED)}


@ARCH_REGISTRY.register()
class FinPercepRAMTagger(nn.Module):
    """RAM tagger (+ DAPE): images -> (prompts, image embeddings). See the module docstring.

    Args:
        ram_path (str): RAM checkpoint. tag_list_path (str): Tag list, one tag a line (T tags).
        dape_path (str | None): SeeSR's DAPE.pth, applied on top of RAM.
        threshold_path (str | None): Per-class thresholds (T lines). threshold (float): Otherwise.
        prompt_suffix (str): Appended to every prompt (the releases append the user prompt).
        image_size (int): Input size of the encoder (384). embed_dim, depths, num_heads, window_size:
            Swin config (Swin-L: 192, (2, 2, 18, 2), (6, 12, 24, 48), 12).
        tag_dim (int): ``image_proj``/``label_embed`` width (512). head_dim, head_heads, head_layers,
            head_ffn: tagging head (768, 4, 2, 3072; RAM's ``q2l_config.json``).
        lora_alpha (float): loralib ``lora_alpha`` of DAPE's adapters (1); scaling is alpha / rank.
    """

    def __init__(self, ram_path, tag_list_path, dape_path=None, threshold_path=None, threshold=0.68,
                 prompt_suffix='', image_size=384, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48),
                 window_size=12, tag_dim=512, head_dim=768, head_heads=4, head_layers=2, head_ffn=3072,
                 lora_alpha=1.0):
        super().__init__()
        self.tags = _read_lines(tag_list_path, 'tag_list_path', 'RAM tag list')
        num_tags = len(self.tags)
        if threshold_path is None:
            thresholds = torch.full((num_tags,), float(threshold))
        else:
            lines = _read_lines(threshold_path, 'threshold_path', 'RAM class thresholds')
            try:
                thresholds = torch.tensor([float(s) for s in lines])
            except ValueError as err:
                raise UserInputError(f'{threshold_path}: not one number a line ({OPT}.threshold_path): {err}') from None
            if len(lines) != num_tags:
                raise UserInputError(f'{threshold_path} has {len(lines)} thresholds for {num_tags} tags in '
                                     f'{tag_list_path} ({OPT}.threshold_path)')
        self.image_size, self.prompt_suffix = int(image_size), str(prompt_suffix)
        self.visual_encoder = RAMSwinEncoder(image_size, embed_dim, depths, num_heads, window_size)
        self.image_proj = nn.Linear(self.visual_encoder.num_features, tag_dim)
        self.label_embed = nn.Parameter(torch.zeros(num_tags, tag_dim))
        self.wordvec_proj = nn.Linear(tag_dim, head_dim) if head_dim != tag_dim else nn.Identity()  # as RAM
        self.tagging_head = RAMTaggingHead(head_dim, head_heads, head_layers, tag_dim, head_ffn)
        self.fc = nn.Linear(head_dim, 1)
        self.register_buffer('class_threshold', thresholds, persistent=False)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        state = self._ram_state(ram_path)
        if dape_path is not None:
            state = self._apply_dape(state, dape_path, float(lora_alpha))
        self.load_state_dict(state)

    def _check(self, state, path, key, partial=False):
        """``state`` without the unused branches; a one-line error if it does not fit the tagger."""
        state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
        problems = describe_state_dict_mismatch(self.state_dict(), state, limit=3)
        if partial:  # DAPE may carry only its adapters and the tensors it changed
            problems = [p for p in problems if not p.startswith('missing')]
        if problems:
            raise UserInputError(f'{path} ({OPT}.{key}) does not fit the RAM tagger '
                                 f'({len(self.tags)} tags): {"; ".join(problems)}')
        return state

    def _ram_state(self, path):
        return self._check(_read_state(path, 'ram_path', 'RAM checkpoint'), path, 'ram_path')

    def _apply_dape(self, state, path, lora_alpha):
        """RAM's state with DAPE's full tensors replaced and its LoRA updates merged."""
        dape = _read_state(path, 'dape_path', 'DAPE checkpoint')
        lora = {k: v for k, v in dape.items()
                if k.endswith(('.lora_A', '.lora_B')) and not k.startswith(UNUSED_PREFIXES)}
        if not lora:
            raise UserInputError(f'{path} has no LoRA tensors (*.lora_A/*.lora_B): not a DAPE file ({OPT}.dape_path)')
        plain = self._check({k: v for k, v in dape.items() if k not in lora}, path, 'dape_path', partial=True)
        state = {**state, **plain}
        for name in sorted({k.rsplit('.', 1)[0] for k in lora}):
            a, b, weight = lora.get(f'{name}.lora_A'), lora.get(f'{name}.lora_B'), state.get(f'{name}.weight')
            if a is None or b is None or weight is None:
                raise UserInputError(f'{path}: LoRA of {name} has no lora_A/lora_B pair or no such layer in the '
                                     f'RAM tagger ({OPT}.dape_path)')
            try:
                state[f'{name}.weight'] = merge_lora(weight, a, b, lora_alpha / b.size(1))
            except ValueError as err:
                raise UserInputError(f'{path}: {name}: {err} ({OPT}.dape_path)') from None
        return state

    def forward(self, images):
        """Tags and image embeddings of a batch.

        Args:
            images (Tensor): (B, 3, H, W) in [0, 1].

        Returns:
            tuple[list[str], Tensor]: B prompts (tags above their class thresholds, ``', '``-joined,
            plus ``prompt_suffix``) and image embeddings (B, 1 + N, tag_dim): the pooled token and the last
            Swin stage's N tokens (N = 12 * 12 for Swin-L at 384).
        """
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode='bilinear', align_corners=False)
        x = ((x - self.mean) / self.std).to(self.image_proj.weight.dtype)
        image_embeds = self.image_proj(self.visual_encoder(x))
        queries = F.relu(self.wordvec_proj(self.label_embed)).expand(x.size(0), -1, -1)
        logits = self.fc(self.tagging_head(queries, image_embeds)).squeeze(-1)
        hits = (torch.sigmoid(logits.float()) > self.class_threshold).tolist()
        prompts = [', '.join(t for t, on in zip(self.tags, row) if on) + self.prompt_suffix for row in hits]
        return prompts, image_embeds
