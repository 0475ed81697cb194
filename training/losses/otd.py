r"""Optimal Transport Distillation (OTD): entropic OT between fake and real x0-prediction clouds.

Notation as in :mod:`training.losses.dmd`: ``x̂0`` generator output, ``f`` / ``r`` fake / real
score x0-predictions at the same x_t. A *point cloud* is a set of points ``{f_i}_{i≤N}``,
``{r_j}_{j≤M}`` in ``R^d`` with uniform weights ``a = 1/N``, ``b = 1/M``:

- ``cloud="samples"``: every batch row is one point (``d = C·F·H·W``). The clouds should be the
  rows gathered across ranks (:func:`gather_cloud`) and/or several noise draws; with one point per
  cloud the plan is ``[[1]]`` and OTD is *exactly* DMD.
- ``cloud="frame_tokens"``: per sample, each latent frame is a point (``N = F``, ``d = C·H·W``);
  one OT problem per sample, batched. The debiased variant is recommended there.

Entropic OT (paper eq. 7), cost and plan in fp64::

    C_ij = ‖f_i − r_j‖² / (2d)
    W_ε(f, r) = min_{P ∈ U(a,b)} ⟨C, P⟩ + ε·KL(P ‖ a bᵀ)            (entropic_ot_value)

``P`` is found by log-domain Sinkhorn (:func:`sinkhorn_log`) and then detached. By the envelope
theorem (eq. 8) ``∂W/∂f_i = Σ_j P_ij (f_i − r_j)/d = (f_i − r̄_i)/(N·d)`` with the barycentric
target ``r̄_i = N·Σ_j P_ij r_j``. The OTD loss is DMD's stop-gradient MSE with that direction:

    paper:    g_OT = (f − r̄) / mean|x̂0 − r|
    debiased: g_OT = (f̄ − r̄) / mean|x̂0 − r|,   f̄_i = N·Σ_j P^ff_ij f_j   (P^ff: plan fake → fake)
    L_OTD = ½ · mean((x̂0 − sg(x̂0 − g_OT))²)

The debiased direction is the envelope gradient of the Sinkhorn divergence
``W_ε(f,r) − ½W_ε(f,f) − ½W_ε(r,r)``; it vanishes exactly when the two clouds coincide, whereas the
paper's ``f − r̄`` keeps an entropic-blur bias ``f − f̄`` even then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

from .dmd import dmd_normalizer, stopgrad_mse

__all__ = [
    "SinkhornResult",
    "OTDTargets",
    "sinkhorn_log",
    "entropic_ot_value",
    "ot_cost_matrix",
    "to_point_cloud",
    "from_point_cloud",
    "gather_cloud",
    "local_rows",
    "otd_targets",
    "otd_loss",
    "CLOUDS",
    "VARIANTS",
]

CLOUDS = ("samples", "frame_tokens")
VARIANTS = ("paper", "debiased")
_FEATURE_CHUNK = 1 << 18  # features per fp64 chunk when building costs / applying plans


# --------------------------------------------------------------------------- Sinkhorn


@dataclass
class SinkhornResult:
    """Output of :func:`sinkhorn_log`.

    ``plan`` ``[..., N, M]`` fp64; ``f`` ``[..., N]`` and ``g`` ``[..., M]`` the dual potentials in
    cost units (``P_ij = exp((f_i + g_j − C_ij)/ε)``); ``n_iters`` iterations run; ``converged``
    whether the row-marginal L1 error fell below ``tol`` (for every problem of the batch);
    ``marginal_error`` that error (max over the batch) at the last check.
    """

    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    n_iters: int
    converged: bool
    marginal_error: float


def _marginals(cost: torch.Tensor, a: Optional[torch.Tensor], b: Optional[torch.Tensor]):
    *batch, n, m = cost.shape
    opts = dict(dtype=torch.float64, device=cost.device)
    a = torch.full((*batch, n), 1.0 / n, **opts) if a is None else a.to(**opts).expand(*batch, n)
    b = torch.full((*batch, m), 1.0 / m, **opts) if b is None else b.to(**opts).expand(*batch, m)
    return a, b


def sinkhorn_log(cost: torch.Tensor, eps: float, a: Optional[torch.Tensor] = None,
                 b: Optional[torch.Tensor] = None, *, n_iters: int = 1000, tol: float = 1e-9,
                 check_every: int = 10) -> SinkhornResult:
    r"""Log-domain Sinkhorn for ``min_P ⟨C,P⟩ + ε·KL(P‖abᵀ)`` s.t. ``P1 = a``, ``Pᵀ1 = b``.

    Alternating dual updates (Peyré & Cuturi 2019, Alg. 2 of the paper's appendix)::

        f_i ← ε·log a_i − ε·LSE_j((g_j − C_ij)/ε)
        g_j ← ε·log b_j − ε·LSE_i((f_i − C_ij)/ε)
        P_ij = exp((f_i + g_j − C_ij)/ε)

    Column marginals are exact after each sweep; the loop stops once ``‖P1 − a‖₁ < tol`` (checked
    every ``check_every`` sweeps, max over the batch) or after ``n_iters`` sweeps. Everything runs
    in fp64. Autograd flows through the unrolled iterations when ``cost`` requires grad (tests use
    that); the trainer calls it under ``no_grad`` and uses the envelope gradient instead.

    Args:
        cost: ``[N, M]`` or batched ``[B, N, M]`` (fp32/fp64; half precision is refused).
        eps: entropic regularisation ε > 0, in cost units.
        a, b: marginals ``[N]`` / ``[M]`` (or batched); uniform by default.
        n_iters: maximum number of sweeps. tol: stopping threshold; ``tol <= 0`` runs all sweeps.
    """
    if cost.dtype in (torch.float16, torch.bfloat16):
        raise ValueError("the OT cost must be fp32/fp64 (it is computed in fp64), not half precision")
    if cost.ndim < 2:
        raise ValueError(f"cost must be [..., N, M], got shape {tuple(cost.shape)}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    C = cost.to(torch.float64)
    a, b = _marginals(C, a, b)
    n, m = C.shape[-2:]
    if n == 1 or m == 1:
        # The transport polytope is a single point: P = a bᵀ exactly (no rounding from iterations).
        plan = a[..., :, None] * b[..., None, :]
        f = (C * b[..., None, :]).sum(-1)
        g = torch.zeros_like(b)
        return SinkhornResult(plan, f, g, 0, True, 0.0)
    loga, logb = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    converged, err, it = False, float("inf"), 0
    for it in range(1, n_iters + 1):
        f = eps * loga - eps * torch.logsumexp((g[..., None, :] - C) / eps, dim=-1)
        g = eps * logb - eps * torch.logsumexp((f[..., :, None] - C) / eps, dim=-2)
        if tol > 0 and (it % check_every == 0 or it == n_iters):
            with torch.no_grad():
                row = torch.exp((f[..., :, None] + g[..., None, :] - C) / eps).sum(-1)
                err = float((row - a).abs().sum(-1).max())
            if err < tol:
                converged = True
                break
    plan = torch.exp((f[..., :, None] + g[..., None, :] - C) / eps)
    if tol <= 0:
        with torch.no_grad():
            err = float((plan.sum(-1) - a).abs().sum(-1).max())
    return SinkhornResult(plan, f, g, it, converged, err)


def entropic_ot_value(cost: torch.Tensor, plan: torch.Tensor, eps: float,
                      a: Optional[torch.Tensor] = None, b: Optional[torch.Tensor] = None,
                      reg_type: str = "kl") -> torch.Tensor:
    r"""Entropic OT objective of a plan: ``⟨C,P⟩ + ε·R(P)`` (per problem: ``[]`` or ``[B]``).

    ``reg_type="kl"`` (default, POT's ``ot.solve`` convention):
    ``R = KL(P‖abᵀ) = Σ P log(P/(ab)) − Σ P + Σ ab``; ``"entropy"``: ``R = Σ P log P``.
    Both give the same optimal plan under fixed marginals. At the Sinkhorn optimum the derivative
    w.r.t. the cost is the plan itself (envelope theorem).
    """
    C = cost.to(torch.float64)
    P = plan.to(torch.float64)
    lin = (C * P).sum((-2, -1))
    if reg_type == "entropy":
        return lin + eps * torch.xlogy(P, P).sum((-2, -1))
    if reg_type != "kl":
        raise ValueError(f"reg_type must be 'kl' or 'entropy', got {reg_type!r}")
    a, b = _marginals(C, a, b)
    ab = a[..., :, None] * b[..., None, :]
    kl = (torch.xlogy(P, P) - torch.xlogy(P, ab) - P + ab).sum((-2, -1))
    return lin + eps * kl


# --------------------------------------------------------------------------- point clouds


def ot_cost_matrix(x: torch.Tensor, y: torch.Tensor, *, chunk: int = _FEATURE_CHUNK) -> torch.Tensor:
    """``C_ij = ‖x_i − y_j‖² / (2d)`` in fp64 for clouds ``x [..., N, d]``, ``y [..., M, d]``.

    Built from fp64 Gram blocks accumulated over feature chunks, so memory stays bounded for
    video-sized points (d in the millions) and no ``N×M×d`` difference tensor is formed.
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"feature dims differ: {x.shape[-1]} vs {y.shape[-1]}")
    d = x.shape[-1]
    sq = None
    for s in range(0, d, chunk):
        xc = x[..., s:s + chunk].to(torch.float64)
        yc = y[..., s:s + chunk].to(torch.float64)
        part = (xc.square().sum(-1)[..., :, None] + yc.square().sum(-1)[..., None, :]
                - 2.0 * (xc @ yc.transpose(-1, -2)))
        sq = part if sq is None else sq + part
    return sq.clamp_min(0.0) / (2.0 * d)


def _apply_plan(w: torch.Tensor, y: torch.Tensor, *, chunk: int = _FEATURE_CHUNK) -> torch.Tensor:
    """``w @ y`` in fp64 (``w [..., n, M]``, ``y [..., M, d]``), chunked over features."""
    outs = [w @ y[..., s:s + chunk].to(torch.float64) for s in range(0, y.shape[-1], chunk)]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def to_point_cloud(x: torch.Tensor, cloud: str, frame_dim: int = 2) -> torch.Tensor:
    """Reshape ``x`` into points: ``"samples"`` → ``[B, d]``; ``"frame_tokens"`` → ``[B, F, d]``
    (``x`` is ``[B, C, F, H, W]``, frames along ``frame_dim``)."""
    if cloud == "samples":
        return x.reshape(x.shape[0], -1)
    if cloud == "frame_tokens":
        if x.ndim < 3:
            raise ValueError(f"frame_tokens needs [B, C, F, ...] tensors, got {tuple(x.shape)}")
        xt = x.movedim(frame_dim, 1)
        return xt.reshape(xt.shape[0], xt.shape[1], -1)
    raise ValueError(f"cloud must be one of {CLOUDS}, got {cloud!r}")


def from_point_cloud(pts: torch.Tensor, cloud: str, shape: torch.Size, frame_dim: int = 2
                     ) -> torch.Tensor:
    """Inverse of :func:`to_point_cloud` for a tensor of the original ``shape``."""
    if cloud == "samples":
        return pts.reshape(shape)
    moved = list(shape)
    fdim = moved.pop(frame_dim)
    moved.insert(1, fdim)
    return pts.reshape(moved).movedim(1, frame_dim)


# --------------------------------------------------------------------------- distributed


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_cloud(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x [B, ...]`` along dim 0 across ranks → ``[world·B, ...]`` (rank order).

    Identity when torch.distributed is not initialised or has one rank. The local rows are ``x``
    itself, so their gradient path is kept; the other ranks' rows are constants. Every rank must
    pass the same shape.
    """
    rank, world = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


def local_rows(n_local: int) -> slice:
    """Slice of this rank's rows inside a :func:`gather_cloud` result."""
    rank, _ = _world()
    return slice(rank * n_local, (rank + 1) * n_local)


# --------------------------------------------------------------------------- OTD


@dataclass
class OTDTargets:
    """Result of :func:`otd_targets` (all fp64, shaped like the local ``fake`` tensor).

    ``real_bar``: r̄ = N·P r; ``fake_bar``: f̄ = N·P^ff f (debiased only, else None);
    ``direction``: ``f − r̄`` (paper) or ``f̄ − r̄`` (debiased); ``plan`` / ``plan_ff``: the detached
    plans (``[N, M]`` or ``[B, F, F]``); ``logs``: detached diagnostics.
    """

    real_bar: torch.Tensor
    fake_bar: Optional[torch.Tensor]
    direction: torch.Tensor
    plan: torch.Tensor
    plan_ff: Optional[torch.Tensor]
    logs: dict = field(default_factory=dict)


def _diag_mass(plan: torch.Tensor) -> torch.Tensor:
    """trace(P)/ΣP averaged over the batch: 1 = identity pairing, 1/N = independent coupling."""
    if plan.shape[-1] != plan.shape[-2]:
        return torch.tensor(float("nan"), dtype=torch.float64, device=plan.device)
    return (plan.diagonal(dim1=-2, dim2=-1).sum(-1) / plan.sum((-2, -1))).mean()


def otd_targets(fake: torch.Tensor, real: torch.Tensor, eps: float, *, cloud: str = "samples",
                variant: str = "paper", fake_cloud: Optional[torch.Tensor] = None,
                real_cloud: Optional[torch.Tensor] = None, local_slice: Optional[slice] = None,
                n_iters: int = 1000, tol: float = 1e-6) -> OTDTargets:
    """Barycentric OT targets for the local fake predictions (everything detached, fp64).

    Args:
        fake, real: local fake / real x0-predictions ``[B, ...]`` (``[B, C, F, H, W]`` for
            ``cloud="frame_tokens"``).
        eps: entropic regularisation, in units of the cost ``‖f − r‖²/(2d)`` (half the per-dim
            mean squared distance).
        cloud: ``"samples"`` or ``"frame_tokens"`` (see module docstring).
        variant: ``"paper"`` (direction f − r̄) or ``"debiased"`` (f̄ − r̄).
        fake_cloud, real_cloud: ``"samples"`` only — the full clouds (e.g. :func:`gather_cloud`
            outputs, or several noise draws); default: the local batch. ``local_slice`` selects
            the rows of ``fake_cloud`` that are ``fake`` (default: all of them / ``local_rows``
            when the clouds are larger than the batch).
    """
    if cloud not in CLOUDS:
        raise ValueError(f"cloud must be one of {CLOUDS}, got {cloud!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    with torch.no_grad():
        fake, real = fake.detach(), real.detach()
        if cloud == "frame_tokens":
            if fake_cloud is not None or real_cloud is not None:
                raise ValueError("fake_cloud / real_cloud apply to cloud='samples' only")
            fp, rp = to_point_cloud(fake, cloud), to_point_cloud(real, cloud)
            rows = slice(None)
        else:
            fc = fake if fake_cloud is None else fake_cloud.detach()
            rc = real if real_cloud is None else real_cloud.detach()
            fp, rp = to_point_cloud(fc, cloud), to_point_cloud(rc, cloud)
            if local_slice is None:
                local_slice = slice(None) if fp.shape[0] == fake.shape[0] else local_rows(fake.shape[0])
            rows = local_slice
        n = fp.shape[-2]
        res = sinkhorn_log(ot_cost_matrix(fp, rp), eps, n_iters=n_iters, tol=tol)
        plan = res.plan
        # r̄_i = N·Σ_j P_ij r_j  (uniform a_i = 1/N); only the local rows are needed.
        w = n * plan[..., rows, :] if cloud == "samples" else n * plan
        real_bar = from_point_cloud(_apply_plan(w, rp), cloud, fake.shape)
        f64 = fake.to(torch.float64)
        logs = {
            "otd_plan_diag_mass": _diag_mass(plan),
            "otd_sinkhorn_iters": torch.tensor(float(res.n_iters)),
            "otd_sinkhorn_converged": torch.tensor(float(res.converged)),
        }
        fake_bar, plan_ff = None, None
        if variant == "debiased":
            res_ff = sinkhorn_log(ot_cost_matrix(fp, fp), eps, n_iters=n_iters, tol=tol)
            plan_ff = res_ff.plan
            wff = n * plan_ff[..., rows, :] if cloud == "samples" else n * plan_ff
            fake_bar = from_point_cloud(_apply_plan(wff, fp), cloud, fake.shape)
            direction = fake_bar - real_bar
            logs["otd_plan_ff_diag_mass"] = _diag_mass(plan_ff)
            logs["otd_sinkhorn_ff_converged"] = torch.tensor(float(res_ff.converged))
        else:
            direction = f64 - real_bar
    return OTDTargets(real_bar, fake_bar, direction, plan, plan_ff, logs)


def otd_loss(x0_gen: torch.Tensor, fake_x0: torch.Tensor, real_x0: torch.Tensor, eps: float = 0.1,
             *, variant: str = "paper", cloud: str = "samples", gather: bool = False,
             fake_cloud: Optional[torch.Tensor] = None, real_cloud: Optional[torch.Tensor] = None,
             local_slice: Optional[slice] = None, n_iters: int = 1000, tol: float = 1e-6,
             norm_eps: float = 1e-8, dtype: torch.dtype = torch.float64
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """OTD generator loss ``½·mean((x̂0 − sg(x̂0 − g_OT))²)`` (paper eq. 10).

    ``g_OT = (f − r̄)/mean|x̂0 − r|`` (``variant="paper"``) or ``(f̄ − r̄)/mean|x̂0 − r|``
    (``"debiased"``), with DMD's per-sample normaliser. ``gather=True`` all-gathers the fake / real
    predictions across ranks (:func:`gather_cloud`) to form the ``"samples"`` clouds; or pass
    ``fake_cloud`` / ``real_cloud`` / ``local_slice`` explicitly. One point per cloud ⇒ P = [[1]] and
    the loss equals :func:`~training.losses.dmd.dmd_loss` bit for bit.

    Returns ``(loss, logs)``; logs (detached): ``otd_grad_norm``, ``otd_plan_diag_mass`` (1 =
    identity pairing), ``otd_rel_diff_dmd`` = ‖g_OT − g_DMD‖/‖g_DMD‖, Sinkhorn iterations /
    convergence (and the fake→fake plan's for ``debiased``).
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"otd_loss must be computed in fp32 or fp64, got {dtype}")
    if not (x0_gen.shape == fake_x0.shape == real_x0.shape):
        raise ValueError(f"shape mismatch: {tuple(x0_gen.shape)}, {tuple(fake_x0.shape)}, "
                         f"{tuple(real_x0.shape)}")
    if gather:
        if cloud != "samples":
            raise ValueError("gather=True applies to cloud='samples' only")
        fake_cloud = gather_cloud(fake_x0.detach())
        real_cloud = gather_cloud(real_x0.detach())
        local_slice = local_rows(fake_x0.shape[0])
    tg = otd_targets(fake_x0, real_x0, eps, cloud=cloud, variant=variant, fake_cloud=fake_cloud,
                     real_cloud=real_cloud, local_slice=local_slice, n_iters=n_iters, tol=tol)
    norm = dmd_normalizer(x0_gen, real_x0, eps=norm_eps, dtype=dtype)
    g = torch.nan_to_num(tg.direction.to(dtype) / norm)
    loss = stopgrad_mse(x0_gen, g, dtype=dtype)
    with torch.no_grad():
        g_dmd = torch.nan_to_num((fake_x0.detach().to(dtype) - real_x0.detach().to(dtype)) / norm)
        logs = dict(tg.logs)
        logs["otd_grad_norm"] = g.norm()
        logs["otd_rel_diff_dmd"] = (g - g_dmd).norm() / g_dmd.norm().clamp_min(1e-30)
    return loss, logs
