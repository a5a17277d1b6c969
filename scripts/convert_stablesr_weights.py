"""Convert StableSR's released checkpoints into a folder for ``FinPercepStableSRGenerator``.

Usage:
    python scripts/convert_stablesr_weights.py --ckpt weights/stablesr_000117.ckpt \
        --cfw weights/vqgan_cfw_00011.ckpt --sd-path weights/stable-diffusion-2-1-base \
        --out weights/stablesr_diffusers

Then set ``network_g.stablesr_path: weights/stablesr_diffusers`` (``sd_path`` stays the SD base for
the text encoder, tokenizer and scheduler). Checkpoints are read with ``weights_only=True`` (or as
safetensors); the key table and what is ignored are in ``finpercep_basicsr/convert/stablesr_convert.py``.
Prints the inferred encoder/SPADE/CFW sizes as JSON; exit 2 with the list of keys on a mismatch.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt', required=True, help='StableSR LDM checkpoint (e.g. stablesr_000117.ckpt)')
    parser.add_argument('--cfw', required=True, help='CFW VAE checkpoint (vqgan_cfw_00011.ckpt)')
    parser.add_argument('--sd-path', required=True, help='diffusers SD 2.1 base folder (unet/ and vae/ configs)')
    parser.add_argument('--out', required=True, help='output folder (network_g.stablesr_path)')
    parser.add_argument('--num-heads', type=int, default=4, help='attention heads of the time-aware encoder')
    parser.add_argument('--norm-groups', type=int, default=32, help='GroupNorm groups of the StableSR modules')
    args = parser.parse_args(argv)
    from finpercep_basicsr.convert.stablesr_convert import convert_stablesr
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        config = convert_stablesr(args.ckpt, args.cfw, args.sd_path, args.out, args.num_heads, args.norm_groups)
        print(json.dumps({'stablesr_path': args.out, 'config': config}, indent=2))
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
