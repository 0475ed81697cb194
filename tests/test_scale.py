"""Real-scale inference on tiny models: per-tensor loading, truncated files, the prompt cache, the
memory plan's refusal, block swap, VAE tiling and chunk cancel, fp8 storage and speed options."""

import diffusers  # noqa: F401  (imported at collection: its log handler binds to pytest's session stream,
import pytest   # never to one test's capsys stream that closes after it)
import torch
import transformers  # noqa: F401

from vdot_nodes.core import models
from vdot_nodes.core.block_swap import BlockSwap, blocks_that_fit, swappable_blocks
from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError, renamed_input
from vdot_nodes.core.memory import PromptCache, file_identity, plan_memory
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.speed import apply_speed_options, choose_attention
from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae
from vdot_nodes.core.vae_tiling import vae_chunks, vae_tiling


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    out = {
        "transformer": models.save_transformer(build_tiny_transformer(0), d / "transformer.safetensors"),
        "vae": models.save_vae(build_tiny_vae(0), d / "vae.safetensors"),
        "text_encoder": models.save_text_encoder(build_tiny_text_encoder(0), build_tiny_tokenizer(), d / "te.safetensors"),
    }
    return out


def _forward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    dtype = model.patch_embedding.weight.dtype
    x = torch.randn(1, 16, 2, 8, 8, generator=g).to(dtype)
    ctx = torch.randn(1, 96, 2, 8, 8, generator=g).to(dtype)
    text = torch.randn(1, 8, 32, generator=g).to(dtype)
    with torch.no_grad():
        return model(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text,
                     control_hidden_states=ctx, control_hidden_states_scale=torch.ones(1, dtype=dtype),
                     return_dict=False)[0].float()


# ---------------------------------------------------------------- loader


def test_positioned_reads_and_per_tensor_mapping_give_the_file_bytes(files):
    from safetensors.torch import load_file

    reference = load_file(str(files["transformer"]))
    entries, metadata = models.read_safetensors_header(files["transformer"])
    assert metadata["vdot_format"] == models.FORMAT_TRANSFORMER and set(entries) == set(reference)
    with models.TensorReader("read") as by_read, models.TensorReader("mmap") as by_map:
        for key, (dtype, shape, start, end) in entries.items():
            a = by_read.read(files["transformer"], start, end)
            b = by_map.read(files["transformer"], start, end)
            assert torch.equal(a, b)
            assert torch.equal(a.view(models.SAFETENSORS_DTYPES[dtype]).reshape(shape), reference[key])


def test_a_refused_mapping_falls_back_to_positioned_reads(files, monkeypatch):
    import errno
    import mmap

    entries, _ = models.read_safetensors_header(files["vae"])
    dtype, shape, start, end = max(entries.values(), key=lambda e: e[3] - e[2])
    with models.TensorReader("read") as reader:
        expected = reader.read(files["vae"], start, end)

    def refuse(*a, **k):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)
    with models.TensorReader("mmap") as reader:
        assert torch.equal(reader.read(files["vae"], start, end), expected)


def test_fp32_file_into_fp8_never_holds_the_state_in_fp32(files, monkeypatch):
    destinations = {}  # storage address -> bytes, for every buffer the reader filled
    original = models.TensorReader.read_into

    def read_into(self, file, start, dest):
        destinations[dest.untyped_storage().data_ptr()] = dest.untyped_storage().nbytes()
        return original(self, file, start, dest)

    monkeypatch.setattr(models.TensorReader, "read_into", read_into)
    model = models.load_transformer(files["transformer"], "fp8_e4m3fn")
    kept = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    # Every read went either straight into a tensor the model keeps (fp32-kept norms) or into ONE
    # reusable staging buffer (≤ READ_CHUNK) from which fp8/bf16 tensors were cast into place:
    # no other fp32 copy of any tensor, let alone of the whole state, was made.
    staging = {ptr: n for ptr, n in destinations.items() if ptr not in kept}
    assert len(staging) == 1 and sum(staging.values()) <= models.READ_CHUNK
    assert len(destinations) > 1
    dtypes = {p.dtype for p in model.parameters()}
    assert torch.float8_e4m3fn in dtypes and torch.float32 not in {p.dtype for n, p in model.named_parameters() if "attn1.to_q" in n}
    # Same tensors as the previous path: load in bf16, then install layerwise casting.
    old = models.load_transformer(files["transformer"], "bf16")
    old.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    new_state, old_state = model.state_dict(), old.state_dict()
    for k, v in old_state.items():
        assert new_state[k].dtype == v.dtype and torch.equal(new_state[k].view(torch.uint8), v.view(torch.uint8)), k


def test_large_tensors_cast_in_row_blocks_load_the_same(files, monkeypatch):
    whole = models.load_transformer(files["transformer"], "fp8_e4m3fn").state_dict()
    monkeypatch.setattr(models.files, "READ_CHUNK", 256)  # every tensor above 256 bytes is read in row blocks
    reads = []
    original = models.TensorReader.read_into
    monkeypatch.setattr(models.TensorReader, "read_into", lambda self, f, a, d: reads.append(d.numel()) or original(self, f, a, d))
    blocks = models.load_transformer(files["transformer"], "fp8_e4m3fn").state_dict()
    assert len(reads) > len(whole)  # big tensors came in several reads
    for k, v in whole.items():
        assert blocks[k].dtype == v.dtype and torch.equal(blocks[k].view(torch.uint8), v.view(torch.uint8)), k


def test_truncated_file_is_told_apart_from_a_file_that_is_not_safetensors(files, tmp_path):
    data = files["transformer"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-1000])
    with pytest.raises(VDOTInputError, match=r"is truncated: its header describes [\d,]+ bytes but the file has") as e:
        models.load_transformer(cut)
    assert "download it again" in e.value.fix
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"0" * 64)
    with pytest.raises(VDOTInputError, match="not a readable safetensors file") as e:
        models.load_transformer(junk)
    assert "download it again" not in e.value.fix and "is truncated" not in str(e.value)


def test_fp8_storage_is_finite_and_close_to_bf16(files):
    reference = _forward(models.load_transformer(files["transformer"], "bf16"))
    for precision in ("fp8_e4m3fn", "fp8_e5m2"):
        out = _forward(models.load_transformer(files["transformer"], precision))
        assert torch.isfinite(out).all()
        rel = ((out - reference).norm() / reference.norm()).item()
        assert 0 < rel < 0.1, (precision, rel)  # fp8 rounds the weights (not bit-equal) but stays close


def test_streamed_text_encoder_reads_blocks_as_they_run_and_encodes_identically(files):
    for precision in ("fp32", "fp8_e4m3fn"):
        resident, tokenizer = models.load_text_encoder(files["text_encoder"], precision)
        streamed, _ = models.load_text_encoder(files["text_encoder"], precision, stream=True)
        assert models.module_bytes(streamed) < models.module_bytes(resident) / 2  # blocks are not held
        a = VDOTPipeline(None, None, resident, tokenizer, device="cpu").encode_prompt(["a red ball"], 16)
        b = VDOTPipeline(None, None, streamed, tokenizer, device="cpu").encode_prompt(["a red ball"], 16)
        assert torch.equal(a, b) and streamed.vdot_stream.stats["reads"] == 2  # both blocks read, once each


def test_fp8_matmul_is_finite_close_to_bf16_and_says_what_ran(files):
    from vdot_nodes.core.speed import FP8Linear

    reference = _forward(models.load_transformer(files["transformer"], "bf16"))
    storage_only = _forward(models.load_transformer(files["transformer"], "fp8_e4m3fn"))
    model = models.load_transformer(files["transformer"], "fp8_e4m3fn")
    ran = apply_speed_options(model, "cpu", fp8_matmul=True)
    linears = [m for m in model.modules() if isinstance(m, FP8Linear)]
    assert ran[-1] == f"fp8 matmul (torch._scaled_mm) in {len(linears)} linear layers" and len(linears) == 3 * 10 + 2  # q,k,v,o x2, FFN x2; VACE proj_in/out
    out = _forward(model)
    assert torch.isfinite(out).all() and not any(m.fallback for m in linears)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert 0 < rel(out, storage_only) < 0.1 and rel(out, reference) < 0.15  # activations rounded to fp8 too
    bf16 = models.load_transformer(files["transformer"], "bf16")
    assert apply_speed_options(bf16, "cpu", fp8_matmul=True)[-1] == "fp8 matmul off (needs precision fp8_e4m3fn)"


# ---------------------------------------------------------------- prompt cache and plan


def test_prompt_cache_hit_never_constructs_the_encoder(files, tmp_path):
    calls = []

    def loader():
        calls.append(1)
        return models.load_text_encoder(files["text_encoder"], "fp32")

    def refusing_loader():
        raise AssertionError("the text encoder was loaded on a cache hit")

    cache = PromptCache(tmp_path / "cache", file_identity(files["text_encoder"]) + "\nfp32")
    first = VDOTPipeline(None, None, text_encoder_loader=loader, prompt_cache=cache, device="cpu").encode_prompt(
        ["a red ball"], max_length=16)
    assert calls == [1] and len(list((tmp_path / "cache").glob("prompt-*.safetensors"))) == 1
    cache2 = PromptCache(tmp_path / "cache", file_identity(files["text_encoder"]) + "\nfp32")
    again = VDOTPipeline(None, None, text_encoder_loader=refusing_loader, prompt_cache=cache2, device="cpu").encode_prompt(
        ["a  red ball"], max_length=16)  # cleaned to the same prompt
    assert torch.equal(first, again) and cache2.hits == 1
    other = PromptCache(tmp_path / "cache", "another encoder")
    assert other.get("a red ball", 16) is None  # the key follows the encoder file


def test_lazy_pipeline_reruns_without_the_encoder_and_releases_components(files, tmp_path, monkeypatch):
    from vdot_nodes.core.components import load_pipeline
    from vdot_nodes.core.tasks import build_vcu

    kwargs = dict(precision="fp32", text_precision="fp32", device="cpu", lazy=True, prompt_cache_dir=tmp_path / "c",
                  plan_shape=(1, 16, 16), plan_prompts=("a red ball",))
    vcu = build_vcu("t2v", prompt="a red ball", num_frames=1, height=16, width=16)
    pipe = load_pipeline(files["transformer"], files["vae"], files["text_encoder"], **kwargs)
    assert pipe._transformer is None and pipe.text_encoder is None  # nothing large loaded yet
    first = pipe.generate(vcu, seed=3)
    assert pipe._transformer is None and pipe.text_encoder is None  # released after their phases
    assert "text encoder" in pipe.memory_plan.describe()

    def no_encoder(*a, **k):
        raise AssertionError("text encoder loaded on a cached prompt")

    monkeypatch.setattr(models, "load_text_encoder", no_encoder)
    pipe2 = load_pipeline(files["transformer"], files["vae"], files["text_encoder"], **kwargs)
    assert "text encoder" not in pipe2.memory_plan.describe()  # the plan knows the prompt is cached
    assert torch.equal(pipe2.generate(vcu, seed=3), first)


def test_the_released_transformer_is_gone_when_its_memory_is_returned(files, tmp_path, monkeypatch):
    """free_memory (gc + malloc_trim) after sampling must find the transformer unreferenced: the sampler's
    velocity closures once kept it alive, so its 4.3 GB (1.3B) stayed resident through the VAE decode."""
    import weakref

    import vdot_nodes.core.pipeline as pipeline_module
    from vdot_nodes.core.components import load_pipeline
    from vdot_nodes.core.tasks import build_vcu

    pipe = load_pipeline(files["transformer"], files["vae"], files["text_encoder"], precision="fp32",
                         text_precision="fp32", device="cpu", lazy=True, prompt_cache_dir=tmp_path / "c",
                         plan_shape=(1, 16, 16), plan_prompts=("a red ball",))
    loaded, load = [], pipe._transformer_loader

    def tracked():
        module = load()
        loaded.append(weakref.ref(module))
        return module

    pipe._transformer_loader = tracked
    alive_at_free = []
    monkeypatch.setattr(pipeline_module, "free_memory", lambda: alive_at_free.append([r() is not None for r in loaded]))
    pipe.generate(build_vcu("t2v", prompt="a red ball", num_frames=1, height=16, width=16), seed=3)
    assert alive_at_free == [[], [False]]  # text encoder released (nothing loaded yet), then the transformer: gone


def test_plan_over_budget_is_refused_before_anything_loads(files, monkeypatch):
    from vdot_nodes.core.components import load_pipeline

    def guard(load):
        def no_load(*a, _meta=False, **k):
            if not _meta:  # reading headers for the plan is allowed; loading weights is not
                raise AssertionError("a model was loaded before the plan was checked")
            return load(*a, _meta=True, **k)
        return no_load

    monkeypatch.setattr(models, "load_transformer", guard(models.load_transformer))
    monkeypatch.setattr(models, "load_vae", guard(models.load_vae))
    with pytest.raises(VDOTInputError, match=r"needs about [\d.]+ GB of RAM at its peak") as e:
        load_pipeline(files["transformer"], files["vae"], files["text_encoder"], precision="bf16", device="cpu",
                      lazy=True, plan_shape=(81, 480, 832), ram_budget_gb=0.3)
    assert e.value.input_name == "ram_budget" and "fp8_e4m3fn" in e.value.fix  # core's name; the CLI's: below


def test_a_ram_budget_the_untiled_vae_would_pass_tiles_the_vae(files):
    """At 480p the VAE runs untiled (as officially) unless the budget says otherwise: then it tiles, the plan
    says so, and the pipeline the CLI builds decodes in tiles (a 1.3B CPU run at 480p peaked in the VAE)."""
    from vdot_nodes.core.components import load_pipeline
    from vdot_nodes.core.memory import BASE_RSS, vae_activation_bytes

    common = dict(precision="fp32", vae_precision="fp32", text_precision="fp32", frames=17, height=480, width=832,
                  device="cpu", prompt_cached=True)
    roomy = plan_memory(files["transformer"], files["vae"], files["text_encoder"], ram_budget_gb=1000, **common)
    assert not roomy.vae_tiling and "tiles" not in roomy.describe()
    vae = models.empty_model(files["vae"], "vae", "fp32")
    base_dim = int(vae.config.base_dim)
    untiled, tiled = vae_activation_bytes(480, 832, base_dim), vae_activation_bytes(256, 256, base_dim)
    fixed = BASE_RSS + models.module_bytes(vae) + 3 * 17 * 480 * 832 * 4 * 3
    budget = fixed + (untiled + tiled) / 2
    ram = dict((name, r) for name, r, _ in roomy.phases)
    assert ram["VAE decode"] == fixed + untiled and ram["transformer"] < budget  # only the VAE is over
    tight = plan_memory(files["transformer"], files["vae"], files["text_encoder"], ram_budget_gb=budget / 1e9, **common)
    assert tight.vae_tiling and dict((n, r) for n, r, _ in tight.phases)["VAE decode"] == fixed + tiled
    assert "VAE in 256-px tiles to fit the RAM budget" in tight.describe()
    pipe = load_pipeline(files["transformer"], files["vae"], files["text_encoder"], precision="fp32", device="cpu",
                         lazy=True, plan_shape=(17, 480, 832), ram_budget_gb=budget / 1e9)
    assert pipe.memory_plan.vae_tiling and pipe.vae_tiling == "on"
    assert load_pipeline(files["transformer"], files["vae"], files["text_encoder"], precision="fp32", device="cpu",
                         lazy=True, plan_shape=(17, 480, 832), ram_budget_gb=1000).vae_tiling == "auto"


def test_vram_budget_picks_the_resident_block_count(files, tmp_path):
    deep = models.save_transformer(build_tiny_transformer(0, num_layers=8, vace_layers=[0, 4]), tmp_path / "deep.safetensors")
    common = dict(precision="fp32", vae_precision="fp32", text_precision="fp32", frames=5, height=32, width=32,
                  device="cuda")
    roomy = plan_memory(deep, files["vae"], files["text_encoder"], vram_budget_gb=1.0, **common)
    assert roomy.resident_blocks is None
    model = models.empty_model(deep, "transformer", "fp32")
    blocks = swappable_blocks(model)
    t_bytes = models.module_bytes(model)
    from vdot_nodes.core.memory import transformer_activation_bytes, video_tokens

    act = transformer_activation_bytes(dict(model.config), video_tokens(5, 32, 32))
    budget = t_bytes + act - 4 * models.module_bytes(blocks[-1])  # four blocks short
    tight = plan_memory(deep, files["vae"], files["text_encoder"], vram_budget_gb=budget / 1e9, **common)
    transformer_phase = dict((name, vram) for name, _, vram in tight.phases)["transformer"]
    assert 1 <= tight.resident_blocks < len(blocks) and transformer_phase <= budget
    assert f"block swap: {tight.resident_blocks} of {len(blocks)} blocks resident" in tight.describe()
    with pytest.raises(VDOTInputError, match="cannot run in") as e:
        plan_memory(deep, files["vae"], files["text_encoder"], vram_budget_gb=act / 1e9, **common)
    assert e.value.input_name == "vram_budget" and "use precision fp8_e4m3fn" in e.value.fix  # core's names
    from vdot_nodes.cli import CLI_NAMES

    as_cli = renamed_input(e.value, CLI_NAMES)  # how `vdot generate` prints it
    assert as_cli.input_name == "--vram-budget" and "use --precision fp8_e4m3fn" in as_cli.fix
    assert "a larger --vram-budget" in as_cli.fix and "--height 16 --width 16 or --frames 1" in as_cli.fix


# ---------------------------------------------------------------- block swap


def test_block_swap_streams_blocks_and_is_bitwise_equal(files):
    reference = _forward(models.load_transformer(files["transformer"], "fp32"))
    model = models.load_transformer(files["transformer"], "fp32")
    blocks = swappable_blocks(model)
    assert len(blocks) == 3  # 1 VACE block + 2 blocks
    seen = []
    with BlockSwap(model, "cpu", resident=1) as swap:
        host = {id(p): p.data.data_ptr() for b in blocks[1:] for p in b.parameters()}
        for b in blocks[1:]:  # registered after the swap's own hook: sees the block as it runs
            b.register_forward_pre_hook(lambda m, a: seen.append(all(p.data.data_ptr() != host[id(p)] for p in m.parameters())))
        out = _forward(model)
        assert seen == [True, True]  # each streamed block ran on a fresh copy
        assert all(p.data.data_ptr() == host[id(p)] for b in blocks[1:] for p in b.parameters())  # and was released
        assert swap.stats == {"swapped_in": 2, "swapped_out": 2}
        out2 = _forward(model)
        assert swap.stats == {"swapped_in": 4, "swapped_out": 4}
    assert torch.equal(out, reference) and torch.equal(out2, reference)
    assert blocks_that_fit(model, 10**9) == 3 and blocks_that_fit(model, 0) == 0


def test_block_swap_with_fp8_storage_is_bitwise_equal(files):
    reference = _forward(models.load_transformer(files["transformer"], "fp8_e4m3fn"))
    model = models.load_transformer(files["transformer"], "fp8_e4m3fn")
    with BlockSwap(model, "cpu", resident=0) as swap:
        out = _forward(model)
    assert swap.stats["swapped_in"] == 3 and torch.equal(out, reference)


# ---------------------------------------------------------------- VAE


def test_tiled_vae_encode_and_decode_within_tolerance():
    from vdot_nodes.core.components import TOY_DIR, TOY_FILES

    vae = models.load_vae(TOY_DIR / TOY_FILES["vae"])  # trained (smooth) toy VAE, 4x spatial
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="ij")
    video = torch.stack([xx, yy, xx * yy])[None, :, None]  # [1, 3, 1, 48, 48]
    with torch.no_grad():
        plain_z = vae.encode(video).latent_dist.mode()
        plain = vae.decode(plain_z).sample
        with vae_tiling(vae, "on", 48, 48, tile=32, stride=24) as on:
            assert on and vae.use_tiling
            tiled_z = vae.encode(video).latent_dist.mode()
            tiled = vae.decode(plain_z).sample
    assert not vae.use_tiling  # restored after the block
    assert tiled.shape == plain.shape and tiled_z.shape == plain_z.shape and not torch.equal(tiled, plain)
    # Stated tolerance at this harsh setting (32-px tiles, 8-px blend; measured 0.059 and 0.087): tiled
    # decode mean |Δ| ≤ 0.08 (a quarter of this VAE's own reconstruction error here, ~0.34), tiled
    # encode mean |Δ| ≤ 12 % of the latents' mean magnitude.
    reconstruction = (plain - video).abs().mean()
    assert (tiled - plain).abs().mean() <= min(0.08, reconstruction / 4)
    assert (tiled_z - plain_z).abs().mean() <= 0.12 * plain_z.abs().mean()
    with vae_tiling(vae, "auto", 480, 832) as on:
        assert not on  # Wan's own sizes stay untiled by default


def test_cancel_stops_between_vae_chunks():
    vae = build_tiny_vae(0)
    chunks = []
    with torch.no_grad(), vae_chunks(vae, cancel=lambda: len(chunks) >= 2, progress=lambda phase, n: chunks.append((phase, n))):
        with pytest.raises(VDOTCancelled):
            vae.decode(torch.randn(1, 16, 5, 4, 4))
    assert chunks == [("decode", 1), ("decode", 2)]  # the third of five latent frames never ran
    with torch.no_grad(), vae_chunks(vae, progress=lambda phase, n: chunks.append((phase, n))):
        vae.encode(torch.zeros(1, 3, 9, 32, 32))
    assert chunks[-1] == ("encode", 3)  # 1 + 4 + 4 frames


# ---------------------------------------------------------------- speed options


def test_speed_options_fall_back_and_say_what_ran(files):
    assert choose_attention("flash", "cpu") == ("sdpa", "sdpa (flash needs a CUDA device)")
    assert choose_attention("auto", "cpu")[0] == "sdpa"
    with pytest.raises(VDOTInputError):
        choose_attention("xformers2", "cpu")
    model = models.load_transformer(files["transformer"], "fp32")
    reference = _forward(model)
    ran = apply_speed_options(model, "cpu", attention="sage")
    assert ran == ["attention sdpa (sage needs a CUDA device)"]
    assert torch.equal(_forward(model), reference)


def test_model_loader_node_budgets(files, comfy_root):
    import shutil

    from vdot_nodes.nodes.loaders import VDOTModelLoader

    shutil.copy(files["transformer"], comfy_root / "models" / "diffusion_models" / "t.safetensors")
    optional = VDOTModelLoader.INPUT_TYPES()["optional"]
    assert set(optional) == {"ram_budget_gb", "vram_budget_gb"} and all(v[1]["tooltip"] for v in optional.values())
    with pytest.raises(VDOTInputError, match="over the 1e-05 GB budget") as e:
        VDOTModelLoader().load("t.safetensors", "bf16", "model", ram_budget_gb=0.00001)
    assert e.value.input_name == "ram_budget_gb" and "fp8_e4m3fn" in e.value.fix
    (loaded,) = VDOTModelLoader().load("t.safetensors", "bf16", "model", ram_budget_gb=1.0, vram_budget_gb=6.0)
    assert loaded.vram_budget_gb == 6.0 and loaded.module.patch_embedding.weight.dtype == torch.bfloat16


def test_cli_refuses_a_run_over_the_ram_budget_before_loading(files, tmp_path, capsys, monkeypatch):
    from vdot_nodes.cli import main

    def no_load(*a, _meta=False, **k):
        raise AssertionError("loaded")

    common = ["generate", "--model", str(files["transformer"]), "--vae", str(files["vae"]), "--text-encoder",
              str(files["text_encoder"]), "--frames", "81", "--height", "480", "--width", "832", "--device", "cpu",
              "--out", str(tmp_path / "o.mp4"), "--no-prompt-cache"]
    assert main(common + ["--ram-budget", "nan"]) == 2
    assert "--ram-budget: nan GB is not a usable budget" in capsys.readouterr().err
    original = models.load_transformer
    monkeypatch.setattr(models, "load_transformer", lambda *a, _meta=False, **k: original(*a, _meta=True, **k) if _meta else no_load())
    assert main(common + ["--ram-budget", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vdot: error: --ram-budget: this run needs about") and "Fix: use" in err[0]
