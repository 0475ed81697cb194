r"""OTD as the released VDOT code computes it: per-frame clouds of 2×2-pooled latent positions.

For each sample b and latent frame t, the fake and real x0-predictions ``[C, H, W]`` are average-pooled
(kernel = stride = ``pool``) and every pooled position becomes one point of dimension C — at 480p
``[16, 60, 104]`` → 30·52 = 1560 points of dimension 16 per frame, 21 independent OT problems per sample::

    C_ij = ‖x_i − y_j‖²                            (squared Euclidean: no ½, no 1/d)
    a = 1/N, b = 1/M                                (uniform marginals)
    f ← log a − LSE_j(−C_ij/ε + g_j),  g ← log b − LSE_i(−C_ij/ε + f_i)     (log domain, from zeros)
    P = exp(f_i − C_ij/ε + g_j),  cost = Σ_ij P_ij C_ij                     (per frame; summed)

ε = 0.1, 60 sweeps. The gradient of the summed cost with respect to the (unpooled) fake prediction is
taken by autograd *through the unrolled sweeps* (``gradient="autograd"``, the plan is not detached), so
it is constant over each 2×2 block with ¼ of the pooled gradient per position. ``gradient="envelope"``
uses the plan as a constant instead: ``∂/∂x_i = Σ_j P_ij·2(x_i − y_j)`` (the envelope theorem for the
entropic objective, exact at Sinkhorn's fixed point; cheaper and with no graph).

Each frame's gradient is then normalised to unit L2 norm over (C, H, W) (+1e-8) and the generator loss
is ``L_OT = ½·Σ(x̂0 − sg(x̂0 − step·ĝ))²`` (**sum**), whose gradient on x̂0 is ``step·ĝ`` (step 0.1).

Memory: the frames are solved in chunks of ``frame_chunk`` and, with autograd, the 60 sweeps are
recomputed in backward in segments (``torch.utils.checkpoint``), so the graph holds a few ``N×M``
matrices per frame of the chunk rather than 120. Everything runs in fp32 or fp64, never in half precision.

Layout: our latents are ``[B, C, F, H, W]`` (diffusers); the frame axis is ``frame_dim`` (2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .dmd import stopgrad_mse

__all__ = ["OT_GRADIENTS", "pooled_frame_clouds", "sinkhorn_unrolled", "pooled_ot_gradient", "frame_unit_normalize",
           "pooled_otd_loss", "envelope_gradient"]

OT_GRADIENTS = ("autograd", "envelope")
_SEGMENT = 6  # Sinkhorn sweeps per checkpointed segment (large problems)
_AUTO_CHUNK_ENTRIES = 1 << 23  # frame_chunk=0: as many frames per chunk as keep N·M·frames under this


def pooled_frame_clouds(x: torch.Tensor, pool: int = 2, frame_dim: int = 2) -> torch.Tensor:
    """``[B, C, F, H, W]`` → ``[B·F, (H//pool)·(W//pool), C]``: per frame, one point per pooled position."""
    if x.ndim != 5:
        raise ValueError(f"expected [B, C, F, H, W] latents, got {tuple(x.shape)}")
    frames = x.movedim(frame_dim, 1)  # [B, F, C, H, W]
    b, f, c, h, w = frames.shape
    if h < pool or w < pool:
        raise ValueError(f"latent frames of {h}x{w} are smaller than the {pool}x{pool} pooling")
    pooled = F.avg_pool2d(frames.reshape(b * f, c, h, w), kernel_size=pool, stride=pool) if pool > 1 \
        else frames.reshape(b * f, c, h, w)
    return pooled.flatten(2).transpose(1, 2)


def _sq_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``‖x_i − y_j‖²`` ``[..., N, M]`` via ``‖x‖² + ‖y‖² − 2x·y`` (no ``N×M×d`` tensor), clamped at 0."""
    sq = x.square().sum(-1)[..., :, None] + y.square().sum(-1)[..., None, :] - 2.0 * (x @ y.transpose(-1, -2))
    return sq.clamp_min(0.0)


def _sweeps(log_k: torch.Tensor, log_kt: torch.Tensor, f: torch.Tensor, g: torch.Tensor, loga: float, logb: float,
            n: int):
    # both reductions run over the last, contiguous axis (log_kt = log_kᵀ): ~3x faster on CPU than dim=-2
    for _ in range(n):
        f = loga - torch.logsumexp(log_k + g[..., None, :], dim=-1)
        g = logb - torch.logsumexp(log_kt + f[..., None, :], dim=-1)
    return f, g


def sinkhorn_unrolled(cost: torch.Tensor, eps: float = 0.1, iters: int = 60, *, segment: int = _SEGMENT
                      ) -> torch.Tensor:
    """The plan ``P`` ``[..., N, M]`` after ``iters`` log-domain sweeps (uniform marginals, from zero potentials).

    Differentiable through every sweep; when ``cost`` requires grad the sweeps are checkpointed in
    segments of ``segment`` (recomputed in backward) to bound memory. Marginals are ``1/N`` and ``1/M``
    (the official ``log(1/N + 1e-12)`` differs from ``log(1/N)`` by < 1e-8 relative).
    """
    if cost.dtype in (torch.float16, torch.bfloat16):
        raise ValueError("the OT cost must be fp32/fp64, not half precision")
    if eps <= 0 or iters < 1:
        raise ValueError(f"need eps > 0 and iters >= 1, got eps={eps}, iters={iters}")
    if cost.numel() <= _AUTO_CHUNK_ENTRIES // 8:  # small: no recomputation (it only adds per-op overhead)
        segment = iters
    n, m = cost.shape[-2:]
    loga, logb = -float(torch.log(torch.tensor(float(n), dtype=torch.float64))), \
        -float(torch.log(torch.tensor(float(m), dtype=torch.float64)))
    log_k = -cost / eps
    log_kt = log_k.transpose(-1, -2).contiguous()
    f = cost.new_zeros(cost.shape[:-1])
    g = cost.new_zeros(cost.shape[:-2] + (m,))
    done = 0
    while done < iters:
        k = min(segment, iters - done)
        if cost.requires_grad and torch.is_grad_enabled():
            f, g = checkpoint(_sweeps, log_k, log_kt, f, g, loga, logb, k, use_reentrant=False)
        else:
            f, g = _sweeps(log_k, log_kt, f, g, loga, logb, k)
        done += k
    return torch.exp(f[..., :, None] + log_k + g[..., None, :])


def envelope_gradient(x: torch.Tensor, y: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """``Σ_j P_ij·2(x_i − y_j)`` ``[..., N, d]``: the gradient of the entropic OT objective at a fixed plan."""
    return 2.0 * (plan.sum(-1, keepdim=True) * x - plan @ y)


def pooled_ot_gradient(fake: torch.Tensor, real: torch.Tensor, *, eps: float = 0.1, iters: int = 60, pool: int = 2,
                       gradient: str = "autograd", frame_chunk: int = 0, dtype: torch.dtype = torch.float32,
                       return_plans: bool = False):
    """∂(Σ_frames cost)/∂fake, shaped like ``fake`` ``[B, C, F, H, W]`` (detached, in ``dtype``).

    ``gradient="autograd"`` differentiates through the unrolled sweeps and the pooling (the released
    code); ``"envelope"`` treats the plan as a constant. Frames are solved ``frame_chunk`` at a time
    (0: as many as keep a chunk's plans under 2^23 entries — 3 frames at 480p, all of them for small latents).
    Returns ``(grad, logs)`` (``logs``: detached ``ot_cost`` sum, ``ot_plan_diag_mass`` mean over frames,
    ``ot_row_marginal_error`` max over frames of ``‖P1 − a‖₁``); with ``return_plans`` also the plans
    ``[B·F, N, M]``.
    """
    with torch.autocast(fake.device.type, enabled=False):  # the cost in fp32/fp64 even inside a bf16 autocast
        return _pooled_ot_gradient(fake, real, eps=eps, iters=iters, pool=pool, gradient=gradient,
                                   frame_chunk=frame_chunk, dtype=dtype, return_plans=return_plans)


def _pooled_ot_gradient(fake, real, *, eps, iters, pool, gradient, frame_chunk, dtype, return_plans):
    if gradient not in OT_GRADIENTS:
        raise ValueError(f"gradient must be one of {OT_GRADIENTS}, got {gradient!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the OT is computed in fp32 or fp64, got {dtype}")
    if fake.shape != real.shape:
        raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} differ in shape")
    b, c, nf, h, w = fake.shape
    frames_f = fake.detach().to(dtype).movedim(2, 1).reshape(b * nf, c, h, w)
    frames_r = real.detach().to(dtype).movedim(2, 1).reshape(b * nf, c, h, w)
    if frame_chunk <= 0:
        n_points = (h // pool) * (w // pool)
        frame_chunk = max(1, _AUTO_CHUNK_ENTRIES // max(1, n_points * n_points))
    grads, plans = [], []
    total, diag, err = 0.0, 0.0, 0.0
    for s in range(0, b * nf, max(1, int(frame_chunk))):
        xf = frames_f[s:s + frame_chunk]
        yr = pooled_frame_clouds(frames_r[s:s + frame_chunk][:, :, None], pool)
        if gradient == "autograd":
            with torch.enable_grad():
                leaf = xf.clone().requires_grad_(True)
                x = pooled_frame_clouds(leaf[:, :, None], pool)
                cost = _sq_cost(x, yr)
                plan = sinkhorn_unrolled(cost, eps, iters)
                value = (plan * cost).sum()
                (g,) = torch.autograd.grad(value, leaf)
            plan, value = plan.detach(), value.detach()
        else:
            with torch.no_grad():
                x = pooled_frame_clouds(xf[:, :, None], pool)
                cost = _sq_cost(x, yr)
                plan = sinkhorn_unrolled(cost, eps, iters)
                value = (plan * cost).sum()
                gp = envelope_gradient(x, yr, plan)  # [k, N, C] on pooled points
                hp, wp = h // pool, w // pool
                gp = gp.transpose(1, 2).reshape(-1, c, hp, wp) / (pool * pool)
                g = torch.zeros_like(xf)
                g[:, :, : hp * pool, : wp * pool] = gp.repeat_interleave(pool, -2).repeat_interleave(pool, -1)
        grads.append(g)
        with torch.no_grad():
            total += float(value)
            n = plan.shape[-2]
            if plan.shape[-1] == n:
                diag += float((plan.diagonal(dim1=-2, dim2=-1).sum(-1) / plan.sum((-2, -1))).sum())
            err = max(err, float((plan.sum(-1) - 1.0 / n).abs().sum(-1).max()))
        if return_plans:
            plans.append(plan)
    grad = torch.cat(grads).reshape(b, nf, c, h, w).movedim(1, 2)
    logs = {"ot_cost": torch.tensor(total), "ot_plan_diag_mass": torch.tensor(diag / (b * nf)),
            "ot_row_marginal_error": torch.tensor(err)}
    return (grad, logs, torch.cat(plans)) if return_plans else (grad, logs)


def frame_unit_normalize(grad: torch.Tensor, eps: float = 1e-8, frame_dim: int = 2) -> torch.Tensor:
    """``g / (‖g‖₂ + eps)`` per (sample, frame), the norm over channels and positions; NaN → 0."""
    dims = tuple(d for d in range(1, grad.ndim) if d != frame_dim)
    return torch.nan_to_num(grad / (torch.linalg.vector_norm(grad, dim=dims, keepdim=True) + eps))


def pooled_otd_loss(x0_gen: torch.Tensor, fake_x0: torch.Tensor, real_x0: torch.Tensor, *, eps: float = 0.1,
                    iters: int = 60, pool: int = 2, gradient: str = "autograd", step: float = 0.1,
                    frame_chunk: int = 0, ot_dtype: torch.dtype = torch.float32,
                    dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, dict]:
    """``L_OT = ½·Σ(x̂0 − sg(x̂0 − step·ĝ))²``, ĝ the per-frame unit-norm OT gradient of the fake prediction.

    Its gradient on ``x0_gen`` is exactly ``step·ĝ``. Returns ``(loss, logs)`` (logs detached:
    ``otd_grad_norm`` = ‖step·ĝ‖, the OT cost, the plans' diagonal mass and row-marginal error, and
    ``otd_rel_diff_dmd`` = ‖ĝ − ĝ_DMD‖/‖ĝ_DMD‖ with ĝ_DMD = the same per-frame unit norm of f − r: 0 when
    the OT moves every frame the way DMD does, √2 when orthogonal — ĝ is unit-normed, so only
    directions can be compared).
    """
    if not (x0_gen.shape == fake_x0.shape == real_x0.shape):
        raise ValueError(f"shape mismatch: {tuple(x0_gen.shape)}, {tuple(fake_x0.shape)}, {tuple(real_x0.shape)}")
    g, logs = pooled_ot_gradient(fake_x0, real_x0, eps=eps, iters=iters, pool=pool, gradient=gradient,
                                 frame_chunk=frame_chunk, dtype=ot_dtype)
    g_hat = frame_unit_normalize(g.to(dtype))
    # stopgrad_mse averages; the released loss sums: scale by numel so ∂L/∂x̂0 = step·ĝ exactly.
    loss = stopgrad_mse(x0_gen, step * g_hat, dtype=dtype) * x0_gen.numel()
    with torch.no_grad():
        g_dmd = frame_unit_normalize((fake_x0.detach() - real_x0.detach()).to(dtype))
        rel = (g_hat - g_dmd).norm() / g_dmd.norm().clamp_min(1e-30)
    logs = {**logs, "otd_grad_norm": (step * g_hat).norm().detach(), "otd_rel_diff_dmd": rel}
    return loss, logs
