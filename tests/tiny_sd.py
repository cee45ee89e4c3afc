"""Test fixture: a Stable Diffusion pipeline built from configs with random weights, offline.

Tests save it with `save_pretrained` and load it back through the same `from_pretrained` path that users
take with a hub id or a downloaded folder; benchmarks/latent_speed.py builds the `sd15` preset, which has the
shapes of Stable Diffusion 1.5 (Rombach et al. 2022: UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder
123M), so its throughput is that of the real model (throughput depends on shape, not on weights).
Imported as `tiny_sd` (tests/ is on sys.path under pytest, as for pipeline_helpers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

VAE_SCALE = 8  # the VAE downsamples 8x (three downsampling blocks)


@dataclass(frozen=True)
class SDSizes:
    """Widths and depths of the three networks of a Stable Diffusion pipeline."""

    unet_channels: tuple[int, ...]  # UNet block_out_channels; every level but the last has cross-attention
    unet_layers: int  # ResNet layers per UNet block
    attention_head_dim: int  # heads of the UNet's attention (diffusers' historical name)
    vae_channels: tuple[int, int, int, int]  # AutoencoderKL block_out_channels (4 levels: 8x down)
    vae_layers: int
    text_width: int  # CLIP hidden size = UNet cross_attention_dim
    text_layers: int
    text_heads: int
    norm_groups: int  # GroupNorm groups of UNet and VAE


PRESETS: dict[str, SDSizes] = {
    "tiny": SDSizes((32, 64), 1, 2, (8, 8, 16, 16), 1, 32, 2, 4, 8),
    # Stable Diffusion 1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5, unet/vae/text_encoder config.json)
    "sd15": SDSizes((320, 640, 1280, 1280), 2, 8, (128, 256, 512, 512), 2, 768, 12, 12, 32),
}


def build_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer with no merges: every character is a token, as in CLIP's base vocab.

    transformers 5 ignores `vocab_file=`/`merges_file=` (a 2-token vocab); vocab and merges go in directly.
    """
    characters = list(bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>", *characters, *(f"{c}</w>" for c in characters)]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=77)


def build_sd_pipeline(
    preset: Literal["tiny", "sd15"] = "tiny", sample_size: int = 32, seed: int = 0
) -> StableDiffusionPipeline:
    """An untrained StableDiffusionPipeline for `sample_size`-px images, weights drawn from `seed`.

    The scheduler is SD 1.5's (PNDM on the scaled-linear betas 0.00085..0.012); no safety checker.
    """
    if preset not in PRESETS:
        raise ValueError(f"tiny_sd preset={preset!r}; expected one of {sorted(PRESETS)}")
    if sample_size % VAE_SCALE:
        raise ValueError(f"tiny_sd sample_size={sample_size}; expected a multiple of {VAE_SCALE} px")
    sizes = PRESETS[preset]
    levels = len(sizes.unet_channels)
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=sample_size // VAE_SCALE,
            in_channels=4,
            out_channels=4,
            block_out_channels=sizes.unet_channels,
            layers_per_block=sizes.unet_layers,
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            cross_attention_dim=sizes.text_width,
            attention_head_dim=sizes.attention_head_dim,
            norm_num_groups=sizes.norm_groups,
        )
        vae = AutoencoderKL(
            sample_size=sample_size,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=sizes.vae_channels,
            layers_per_block=sizes.vae_layers,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=sizes.norm_groups,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=sizes.text_width,
                intermediate_size=4 * sizes.text_width,
                num_hidden_layers=sizes.text_layers,
                num_attention_heads=sizes.text_heads,
                max_position_embeddings=tokenizer.model_max_length,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sd_pipeline(
    folder: Path, *, sample_size: int = 32, preset: Literal["tiny", "sd15"] = "tiny", seed: int = 0
) -> Path:
    """Save `build_sd_pipeline(preset, sample_size, seed)` to `folder` with `save_pretrained`; return `folder`."""
    folder = Path(folder)
    build_sd_pipeline(preset, sample_size, seed).save_pretrained(folder, safe_serialization=True)
    return folder
