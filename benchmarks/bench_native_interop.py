"""Our native-interop nodes against a real ComfyUI: same weights, same video?

Builds a tiny Wan2.1-VACE the way ComfyUI does (``supported_models.WAN21_Vace`` → ``model_base.WAN21_Vace`` /
``VaceWanModel`` under a real ``ModelPatcher``) with the weights of our tiny diffusers model, and a random
real-size Wan 2.1 VAE read both by ``comfy.sd.VAE`` and by our loader (from the same safetensors file).
Prints max |difference| (frames in 0..1) of:

- VDOT Sampler (native MODEL) vs VDOT Sampler (presets vdot, and renoise with cfg 2);
- the same with a ComfyUI LoRA patch (``comfy.lora.load_lora``) vs our sampler on the merged weights;
- fp8-stored weights (ComfyUI's manual cast) vs fp32;
- VDOT VCU to Wan VACE vs ComfyUI's own ``WanVaceToVideo`` (the VACE context ``WAN21_Vace.extra_conds`` builds);
- ComfyUI's ``CFGGuider`` + VDOT Sigmas + VDOT FlowUniPC + trim on that conditioning vs VDOT Sampler;
- and which model ``detect_unet_config`` picks for the VDOT-14B key set (meta tensors, nothing allocated).

ComfyUI is not a dependency: point ``--comfy`` at a checkout. Where torchvision/torchaudio cannot be
imported (a CPU box), ``--stub-torchvision`` puts empty modules in their place (only unrelated model files
import them); diffusers/transformers are imported before that so their own probes are not fooled.

    python benchmarks/bench_native_interop.py --comfy /path/to/ComfyUI

Against ComfyUI a125cd84 on a CPU (``--stub-torchvision``, torchsde installed aside): frames differ by
1.4e-6 (native sampler, LoRA-patched vs merged, CFGGuider path), 1.8e-6 (renoise, cfg 2); VACE context vs
WanVaceToVideo 1.5e-8; fp8 storage vs fp32 2.5e-2; the 14B key set is detected as WAN21_Vace.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
F, H, W = 5, 32, 48


class _EmptyModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__, module.__file__ = [], "<empty>"

        def attr(name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {})

        module.__getattr__ = attr
        return module

    def exec_module(self, module):
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", required=True, help="a ComfyUI checkout")
    parser.add_argument("--stub-torchvision", action="store_true", help="empty torchvision/torchaudio modules")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import diffusers  # noqa: F401  before any stub: transformers probes for torchvision
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel  # noqa: F401
    from vdot_nodes.core import models
    from vdot_nodes.core.atomic import atomic_save_safetensors
    from vdot_nodes.core.tiny import build_tiny_transformer
    from vdot_nodes.core.vcu import build_r2v_vcu
    from vdot_nodes.core.models.convert.wan_transformer import comfy_key_names
    from vdot_nodes.nodes import NODE_CLASS_MAPPINGS
    from vdot_nodes.nodes.loaders import LoadedModel
    from vdot_nodes.nodes.text import Embeds

    if args.stub_torchvision:
        sys.meta_path.insert(0, _EmptyModules(("torchvision", "torchaudio")))
    sys.path.insert(0, str(Path(args.comfy).resolve()))
    sys.argv = [sys.argv[0]] + ([] if torch.cuda.is_available() else ["--cpu"])
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ldm.wan.vae
    import comfy.lora
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher
    import comfy.samplers
    import comfy.sd
    import comfy.supported_models
    import comfy_extras.nodes_custom_sampler as custom_sampler
    import comfy_extras.nodes_wan as nodes_wan

    def call(name, **kw):
        cls = NODE_CLASS_MAPPINGS[name]
        return getattr(cls(), cls.FUNCTION)(**kw)

    def diff(a, b):
        return f"{float((a - b).detach().abs().max()):.1e}"

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    tiny = build_tiny_transformer(seed=3).eval()
    names = comfy_key_names(tiny.state_dict())
    state = {names[k]: v.clone() for k, v in tiny.state_dict().items()}
    cfg = tiny.config
    unet_config = dict(image_model="wan2.1", model_type="vace", dim=cfg.num_attention_heads * cfg.attention_head_dim,
                       num_heads=cfg.num_attention_heads, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
                       in_dim=cfg.in_channels, out_dim=cfg.out_channels, vace_in_dim=cfg.vace_in_channels,
                       vace_layers=len(cfg.vace_layers), freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
                       patch_size=(1, 2, 2), window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=cfg.eps)

    def comfy_model(weight_dtype):
        config = comfy.supported_models.WAN21_Vace(unet_config)
        config.set_inference_dtype(weight_dtype, None if weight_dtype == torch.float32 else torch.float32)
        base = config.get_model(state)
        missing, unexpected = base.diffusion_model.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)

    patcher = comfy_model(torch.float32)

    torch.manual_seed(1)
    wan_vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                       temperal_downsample=[False, True, True], dropout=0.0)
    with torch.no_grad():  # ComfyUI's layers skip weight init; give them finite values
        for name, p in wan_vae.named_parameters():
            p.fill_(1.0) if name.endswith("gamma") else p.normal_(0, p[0].numel() ** -0.5) if p.ndim > 1 else p.zero_()
    vae_state = {k: v.contiguous() for k, v in wan_vae.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        atomic_save_safetensors(vae_state, f"{tmp}/wan_2.1_vae.safetensors")
        our_vae = models.load_vae(f"{tmp}/wan_2.1_vae.safetensors", precision="fp32")
    comfy_vae = comfy.sd.VAE(sd=vae_state)

    g = torch.Generator().manual_seed(5)
    text, neg = torch.zeros(1, 512, cfg.text_dim), torch.zeros(1, 512, cfg.text_dim)
    text[:, :7], neg[:, :5] = torch.randn(1, 7, cfg.text_dim, generator=g), torch.randn(1, 5, cfg.text_dim, generator=g)
    reference = torch.rand(H, W, 3, generator=g)
    vcu = build_r2v_vcu([reference], F, H, W)
    common = dict(vcu=vcu, seed=7, preset="vdot", steps=0, shift=0.0, cfg=1.0, denoise=1.0, control_scale=1.0, num_videos=1)

    def ours(transformer, **kw):
        return call("VDOTSampler", model=LoadedModel(transformer, "t", offload=False), vae=LoadedModel(our_vae, "v"),
                    embeds=Embeds(text, neg), **{**common, **kw})[0]

    def native(model, **kw):
        return call("VDOTNativeSampler", model=model, vae=comfy_vae, positive=[[text, {}]], negative=[[neg, {}]],
                    **{**common, **kw})[0]

    rows = []
    reference_video = ours(tiny)
    rows.append(("native sampler vs VDOT Sampler, vdot", diff(native(patcher), reference_video)))
    kw = dict(preset="renoise", cfg=2.0, control_scale=0.6)
    rows.append(("native sampler vs VDOT Sampler, renoise cfg 2", diff(native(patcher, **kw), ours(tiny, **kw))))

    down, up = 0.2 * torch.randn(4, unet_config["dim"], generator=g), 0.2 * torch.randn(unet_config["dim"], 4, generator=g)
    lora = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(2.0)}
    patched = patcher.clone()
    patched.add_patches(comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(patcher.model, {})), 0.8)
    merged = build_tiny_transformer(seed=3).eval()
    merged.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        merged.blocks[0].attn1.to_q.weight += 0.8 * (up @ down) * (2.0 / 4)
    with_lora = native(patched)
    rows.append(("LoRA-patched MODEL vs merged weights", diff(with_lora, ours(merged))))
    rows.append(("  (LoRA-patched vs unpatched, for scale)", diff(with_lora, reference_video)))
    comfy.model_management.unload_all_models()
    rows.append(("base MODEL again after the LoRA clone", diff(native(patcher), reference_video)))
    rows.append(("fp8-stored MODEL vs fp32 (fp8 rounding)", diff(native(comfy_model(torch.float8_e4m3fn)), reference_video)))

    pos, negc, latent, trim = call("VDOTVCUToWanVace", positive=[[text, {}]], negative=[[neg, {}]], vae=comfy_vae,
                                   vcu=vcu, batch_size=1, strength=1.0)
    out = nodes_wan.WanVaceToVideo.execute(positive=[[text, {}]], negative=[[neg, {}]], vae=comfy_vae, width=W, height=H,
                                           length=F, batch_size=1, strength=1.0, control_video=vcu.frames,
                                           control_masks=vcu.masks, reference_image=reference[None])
    real_pos, _, real_latent, real_trim = out.result if hasattr(out, "result") else out
    assert (trim, tuple(latent["samples"].shape)) == (real_trim, tuple(real_latent["samples"].shape))

    def vace_context(c):
        noise = torch.zeros_like(latent["samples"])
        return patcher.model.extra_conds(noise=noise, device=cpu, **c[0][1])["vace_context"].cond.detach()

    rows.append(("VCU to Wan VACE vs WanVaceToVideo (VACE context)", diff(vace_context(pos), vace_context(real_pos))))
    (sigmas,) = call("VDOTSigmas", preset="vdot", steps=0, shift=0.0, denoise=1.0)
    (sampler,) = call("VDOTFlowUniPC", timesteps="truncated")
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(pos, negc)
    guider.set_cfg(1.0)
    noise = custom_sampler.Noise_RandomNoise(7).generate_noise(latent)
    sampled = guider.sample(noise, latent["samples"], sampler, sigmas, seed=7)[:, :, trim:]
    rows.append(("CFGGuider + VDOT Sigmas + FlowUniPC vs VDOT Sampler", diff(comfy_vae.decode(sampled).reshape(-1, H, W, 3),
                                                                              reference_video)))

    cfg14 = models.load_config(models.TRANSFORMER_CONFIGS["14B"])
    shapes = models.meta_shapes("transformer", cfg14)
    sd14 = {orig: torch.empty(shapes[d], device="meta") for d, orig in comfy_key_names(shapes).items()}
    detected = comfy.model_detection.detect_unet_config(sd14, "")
    picked = type(comfy.model_detection.model_config_from_unet(sd14, "")).__name__
    for name, value in rows:
        print(f"{name:55s} {value}")
    keys = ("model_type", "dim", "num_heads", "num_layers", "vace_layers", "vace_in_dim")
    print(f"detect_unet_config on the VDOT-14B key set: {picked} {dict((k, detected[k]) for k in keys)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
