"""Save a Stable Diffusion pipeline with SD 1.5's shapes and random weights as a local diffusers folder, offline.

    python scripts/save_sd15.py FOLDER [--sample-size 512] [--seed 0]

The folder is what `save_pretrained` writes (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/,
safetensors weights: 4.3 GB in fp32), so `finetune.pretrained: FOLDER` loads it the way it loads
stable-diffusion-v1-5/stable-diffusion-v1-5 or a downloaded copy. Its networks are `tests/tiny_sd.py`'s "sd15"
preset (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M): every cost of the study's method at its real size
(memory, time, file sizes) is that of the real model; its images are noise. scripts/rehearse_sd15.sh uses it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sample-size", type=int, default=512, help="px the VAE sees (SD 1.5: 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))  # tiny_sd: a test fixture, not part of the package
    from tiny_sd import build_tiny_sd_pipeline

    staging = args.folder.with_name(args.folder.name + ".partial")  # a killed save leaves no half folder
    shutil.rmtree(staging, ignore_errors=True)
    build_tiny_sd_pipeline(staging, sample_size=args.sample_size, preset="sd15", seed=args.seed)
    shutil.rmtree(args.folder, ignore_errors=True)
    staging.rename(args.folder)
    size = sum(file.stat().st_size for file in args.folder.rglob("*") if file.is_file())
    print(f"saved an SD-1.5-shaped pipeline with random weights ({size / 2**30:.2f} GiB) to {args.folder}")


if __name__ == "__main__":
    main()
