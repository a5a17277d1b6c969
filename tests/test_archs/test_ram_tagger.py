"""RAM/DAPE tagger: the released key layout loads strictly, prompts follow the class thresholds, DAPE's
LoRA merges as loralib does, and the image embeddings feed SeeSR's image cross-attention."""
import pytest
import torch
from basicsr.archs import build_network
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder

import finpercep_basicsr.archs  # noqa: F401
from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
from finpercep_basicsr.utils.errors import UserInputError

pytestmark = pytest.mark.usefixtures('one_thread')

TAGS = ['sky', 'tree', 'dog', 'grass', 'car']
# tiny Swin (2 stages, shifted windows in both) and tagging head; 512-d image embeddings as SeeSR takes
TINY = dict(image_size=64, embed_dim=8, depths=[2, 2], num_heads=[2, 4], window_size=4, tag_dim=512, head_dim=16,
            head_heads=2, head_layers=1, head_ffn=32)
TOKENS = 1 + (64 // 4 // 2) ** 2  # pooled token + the last stage's 8 x 8 grid


def released_ram_state(num_tags=len(TAGS), seed=0):
    """A random state dict named as RAM's ram_swin_large_14m.pth (``visual_encoder.*`` in Microsoft
    Swin naming, ``tagging_head.*`` in BERT naming), with the Tag2Text branches and the Swin index
    buffers the released file also carries."""
    gen = torch.Generator().manual_seed(seed)

    def t(*shape):
        return 0.2 * torch.randn(*shape, generator=gen)

    def linear(name, out, inp, bias=True):
        s[f'{name}.weight'] = t(out, inp)
        if bias:
            s[f'{name}.bias'] = t(out)

    def norm(name, dim):
        s[f'{name}.weight'], s[f'{name}.bias'] = 1 + t(dim), t(dim)

    s = {'visual_encoder.patch_embed.proj.weight': t(8, 3, 4, 4), 'visual_encoder.patch_embed.proj.bias': t(8)}
    norm('visual_encoder.patch_embed.norm', 8)
    ws = TINY['window_size']
    for i, (depth, heads) in enumerate(zip(TINY['depths'], TINY['num_heads'])):
        c = 8 * 2 ** i
        for j in range(depth):
            p = f'visual_encoder.layers.{i}.blocks.{j}'
            norm(f'{p}.norm1', c)
            s[f'{p}.attn.relative_position_bias_table'] = t((2 * ws - 1) ** 2, heads)
            s[f'{p}.attn.relative_position_index'] = torch.zeros(ws * ws, ws * ws, dtype=torch.long)
            linear(f'{p}.attn.qkv', 3 * c, c)
            linear(f'{p}.attn.proj', c, c)
            norm(f'{p}.norm2', c)
            linear(f'{p}.mlp.fc1', 4 * c, c)
            linear(f'{p}.mlp.fc2', c, 4 * c)
            if j % 2:
                s[f'{p}.attn_mask'] = torch.zeros(4, ws * ws, ws * ws)
        if i < len(TINY['depths']) - 1:
            norm(f'visual_encoder.layers.{i}.downsample.norm', 4 * c)
            linear(f'visual_encoder.layers.{i}.downsample.reduction', 2 * c, 4 * c, bias=False)
    norm('visual_encoder.norm', 16)
    linear('image_proj', 512, 16)
    s['label_embed'] = t(num_tags, 512)
    linear('wordvec_proj', 16, 512)
    linear('fc', 1, 16)
    p = 'tagging_head.encoder.layer.0'
    linear(f'{p}.crossattention.self.query', 16, 16)
    linear(f'{p}.crossattention.self.key', 16, 512)
    linear(f'{p}.crossattention.self.value', 16, 512)
    linear(f'{p}.crossattention.output.dense', 16, 16)
    norm(f'{p}.crossattention.output.LayerNorm', 16)
    linear(f'{p}.intermediate.dense', 32, 16)
    linear(f'{p}.output.dense', 16, 32)
    norm(f'{p}.output.LayerNorm', 16)
    s['tag_encoder.encoder.layer.0.attention.self.query.weight'] = t(4, 4)  # Tag2Text: not run by the tagger
    s['text_decoder.cls.predictions.bias'] = t(10)
    return s


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('ram')
    torch.save({'model': released_ram_state()}, root / 'ram_swin_large_14m.pth')
    (root / 'ram_tag_list.txt').write_text('\n'.join(TAGS) + '\n')
    (root / 'thresholds.txt').write_text('0\n1\n0\n1\n0\n')  # sigmoid > 0 always, > 1 never
    return root


def tagger_opt(files, **kw):
    return {'type': 'FinPercepRAMTagger', 'ram_path': str(files / 'ram_swin_large_14m.pth'),
            'tag_list_path': str(files / 'ram_tag_list.txt'), **TINY, **kw}


def test_tagger_loads_released_layout_and_returns_prompts_and_embeds(files):
    tagger = build_network(tagger_opt(files)).eval()
    state = released_ram_state()
    assert torch.equal(tagger.state_dict()['visual_encoder.layers.0.downsample.reduction.weight'],
                       state['visual_encoder.layers.0.downsample.reduction.weight'])
    prompts, embeds = tagger(torch.rand(2, 3, 40, 56))
    assert isinstance(prompts, list) and len(prompts) == 2 and all(isinstance(p, str) for p in prompts)
    assert all(tag in TAGS for p in prompts for tag in p.split(', ') if p)
    assert embeds.shape == (2, TOKENS, 512)

    fixed = build_network(tagger_opt(files, threshold_path=str(files / 'thresholds.txt'), prompt_suffix=', 8k'))
    prompts, _ = fixed(torch.rand(3, 3, 32, 32))
    assert prompts == ['sky, dog, car, 8k'] * 3  # exactly the tags whose threshold the score passes
    none = build_network(tagger_opt(files, threshold=1.0))
    assert none(torch.rand(1, 3, 32, 32))[0] == ['']


def test_swin_encoder_matches_timm_on_the_released_weights(files):
    """timm converts Microsoft-Swin checkpoints (its ``checkpoint_filter_fn``): an independent reference."""
    from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn
    tagger = build_network(tagger_opt(files)).eval()
    ref = SwinTransformer(img_size=64, patch_size=4, embed_dim=8, depths=(2, 2), num_heads=(2, 4), window_size=4,
                          num_classes=0).eval()
    swin = {k.removeprefix('visual_encoder.'): v for k, v in released_ram_state().items()
            if k.startswith('visual_encoder.')}
    ref.load_state_dict(checkpoint_filter_fn(swin, ref))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = tagger.visual_encoder(x), ref.forward_features(x).flatten(1, 2)
    assert torch.allclose(ours[:, 1:], theirs, atol=1e-5)
    assert torch.allclose(ours[:, 0], theirs.mean(1), atol=1e-5)


def test_dape_lora_merges_like_loralib(files, tmp_path):
    base = released_ram_state()
    qkv, query = 'visual_encoder.layers.1.blocks.1.attn.qkv', 'tagging_head.encoder.layer.0.crossattention.self.query'
    r = 8
    dape = {f'{qkv}.lora_A': torch.randn(2 * r, 16), f'{qkv}.lora_B': torch.randn(2 * 16, r),  # MergedLinear q, v
            f'{query}.lora_A': torch.randn(r, 16), f'{query}.lora_B': torch.randn(16, r),  # lora.Linear
            'tag_encoder.encoder.layer.0.attention.self.query.lora_A': torch.randn(r, 4),  # Tag2Text: skipped
            'fc.bias': torch.tensor([3.0])}  # a full tensor DAPE carries replaces RAM's
    torch.save(dape, tmp_path / 'DAPE.pth')
    tagger = build_network(tagger_opt(files, dape_path=str(tmp_path / 'DAPE.pth')))
    own = tagger.state_dict()
    delta = own[f'{qkv}.weight'] - base[f'{qkv}.weight']
    a, b = dape[f'{qkv}.lora_A'], dape[f'{qkv}.lora_B']
    assert torch.allclose(delta[:16], b[:16] @ a[:r] / r, atol=1e-5)  # q; scaling lora_alpha / r = 1 / 8
    assert torch.equal(delta[16:32], torch.zeros(16, 16))  # k has no adapter
    assert torch.allclose(delta[32:], b[16:] @ a[r:] / r, atol=1e-5)  # v
    assert torch.allclose(own[f'{query}.weight'] - base[f'{query}.weight'],
                          dape[f'{query}.lora_B'] @ dape[f'{query}.lora_A'] / r, atol=1e-5)
    assert own['fc.bias'].item() == 3.0


def test_missing_or_mismatched_files_are_one_line_errors(files, tmp_path):
    cases = [
        (dict(tag_list_path=str(tmp_path / 'none.txt')), 'tag_list_path'),
        (dict(ram_path=str(tmp_path / 'none.pth')), 'ram_path'),
        (dict(threshold_path=str(files / 'ram_tag_list.txt')), 'threshold_path'),
    ]
    (tmp_path / 'six.txt').write_text('\n'.join(TAGS + ['cat']))
    cases.append((dict(tag_list_path=str(tmp_path / 'six.txt')), r'ram_path.*label_embed'))  # 6 tags, 5 in file
    torch.save({'fc.weight': torch.zeros(1, 16)}, tmp_path / 'not_dape.pth')
    cases.append((dict(dape_path=str(tmp_path / 'not_dape.pth')), 'no LoRA.*dape_path'))
    torch.save({'fc.lora_A': torch.zeros(8, 16), 'fc.lora_B': torch.zeros(2, 8)}, tmp_path / 'bad_dape.pth')
    cases.append((dict(dape_path=str(tmp_path / 'bad_dape.pth')), r'bad_dape.pth.*fc.*dape_path'))
    for kw, match in cases:
        with pytest.raises(UserInputError, match=match) as err:
            build_network(tagger_opt(files, **kw))
        assert '\n' not in str(err.value)


@pytest.fixture(scope='module')
def sd_seesr(tmp_path_factory):
    root = tmp_path_factory.mktemp('seesr')
    return make_sd_folder(str(root / 'sd')), make_seesr_folder(str(root / 'seesr'))


def test_tagger_feeds_seesr_image_cross_attention(files, sd_seesr):
    sd, seesr = sd_seesr
    torch.manual_seed(0)
    gen = FinPercepSeeSRGenerator(sd, seesr, num_steps=2, tagger=tagger_opt(files), sample_eta=0.0)
    contexts = []

    def record(module, args, kwargs, out):
        contexts.append(kwargs['encoder_hidden_states'])
    gen.unet.down_blocks[0].image_attentions[0].register_forward_hook(record, with_kwargs=True)
    lq = torch.rand(1, 3, 8, 8)
    torch.manual_seed(1)
    with_image = gen.sample_no_grad(lq)
    _, embeds = gen.prompt.tagger(lq)
    assert len(contexts) == 2 and all(torch.equal(c, embeds) for c in contexts)  # one call per sampling step

    torch.manual_seed(0)
    plain = FinPercepSeeSRGenerator(sd, seesr, num_steps=2, prompt='a photo', allow_no_tagger=True)
    plain.load_state_dict(gen.state_dict(), strict=False)  # same adapters: only the conditioning differs
    plain.unet.down_blocks[0].image_attentions[0].register_forward_hook(record, with_kwargs=True)
    torch.manual_seed(1)
    assert not torch.allclose(plain.sample_no_grad(lq), with_image)
    assert len(contexts) == 2  # without a tagger the image attention does not run


def test_seesr_without_tagger_is_refused_unless_allowed(sd_seesr):
    sd, seesr = sd_seesr
    with pytest.raises(UserInputError, match=r'network_g\.tagger') as err:
        FinPercepSeeSRGenerator(sd, seesr, num_steps=2, prompt='a photo')
    assert 'allow_no_tagger' in str(err.value) and '\n' not in str(err.value)
    FinPercepSeeSRGenerator(sd, seesr, num_steps=2, prompt='a photo', allow_no_tagger=True)


def test_osediff_takes_its_prompt_from_the_tagger(files, sd_seesr):
    from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
    opt = tagger_opt(files, threshold_path=str(files / 'thresholds.txt'))
    gen = FinPercepOSEDiffGenerator(sd_seesr[0], tagger=opt)
    lq = torch.rand(2, 3, 8, 8)
    text, _ = gen.prompt(lq)
    assert torch.allclose(text, gen.prompt.encode(['sky, dog, car'] * 2))
    assert gen.sample_no_grad(lq).shape == (2, 3, 32, 32)
