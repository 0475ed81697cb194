"""Consistency distillation (CD), DOLLAR's second distillation objective next to variational score distillation.

Conventions (Wan flow matching): ``x_t = (1 - σ)·x0 + σ·ε``, networks predict ``v = ε - x0`` and the
x0-prediction is ``x0 = x_t - σ·v``. The few-step student ``f_θ`` maps a noisy latent at one of its
steps σ_k straight to x0.

For a student step σ_k and the next (smaller) time σ_{k'} (``σ_{k'} < σ_k``, an interval of the
teacher's ODE, possibly 0), CD asks the student to be self-consistent along the teacher's
probability-flow ODE:

    x̂_{k'}  = x_k + (σ_{k'} - σ_k) · v_teacher(x_k, σ_k)              (one teacher ODE step, Euler)
    target  = sg( x̂_{k'} - σ_{k'} · v_target(x̂_{k'}, σ_{k'}) )         (student or its EMA at σ_{k'})
    L_CD    = mean( d( f_θ(x_k, σ_k), target ) ),   d(a, b) = (a - b)²   or   √((a - b)² + c²) - c

At ``σ_{k'} = 0`` the target is ``x̂_0`` itself (the boundary condition f(x, 0) = x). The teacher
velocity may be classifier-free guided; the target network is the EMA in the original CD and the
stop-gradient student in DOLLAR's few-step setting — both are a caller's choice, this module only
fixes the arithmetic. Everything is computed in fp64 by default, like the other losses here.

:func:`consistency_distillation_loss` is the whole term as the trainer uses it
(``loss.consistency_weight``): teacher step, target (the stop-grad student) and distance, given the
student's exit-step input ``x_k`` and its x0-prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["consistency_distillation_loss", "consistency_loss", "consistency_target", "teacher_ode_step"]

NUM_TRAIN_TIMESTEPS = 1000  # the networks see t = σ·1000 (Wan)


def _sigma(sigma, like: torch.Tensor, dtype) -> torch.Tensor:
    """A scalar or per-sample ``[B]`` σ shaped to broadcast over ``like`` ([B, ...])."""
    s = torch.as_tensor(sigma, dtype=dtype, device=like.device)
    if s.ndim == 1:
        s = s.view(-1, *([1] * (like.ndim - 1)))
    return s


def teacher_ode_step(x_t: torch.Tensor, teacher_velocity: torch.Tensor, sigma, sigma_next, *,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """One Euler step of the flow-matching ODE ``dx/dσ = v``: ``x_{σ'} = x_σ + (σ' - σ)·v`` (detached).

    Exact when ``v`` is the true straight-line velocity ``ε - x0`` of ``x_σ``.
    """
    x = x_t.detach().to(dtype)
    return x + (_sigma(sigma_next, x, dtype) - _sigma(sigma, x, dtype)) * teacher_velocity.detach().to(dtype)


def consistency_target(x_next: torch.Tensor, sigma_next, target_velocity: torch.Tensor | None = None, *,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``sg(x_{σ'} - σ'·v_target(x_{σ'}, σ'))``: the target network's x0 at the next time (detached).

    ``target_velocity`` may be ``None`` only when ``σ' = 0`` (the target is then ``x_{σ'}``).
    """
    x = x_next.detach().to(dtype)
    s = _sigma(sigma_next, x, dtype)
    if target_velocity is None:
        if bool((s != 0).any()):
            raise ValueError("consistency_target needs target_velocity unless sigma_next is 0")
        return x
    return (x - s * target_velocity.detach().to(dtype)).detach()


def consistency_loss(student_x0: torch.Tensor, target_x0: torch.Tensor, *, huber_c: float | None = None,
                     weight: torch.Tensor | float | None = None, dtype: torch.dtype = torch.float64
                     ) -> torch.Tensor:
    """``L_CD = mean(w · d(f_θ(x_k), sg(target)))`` with ``d`` squared error, or pseudo-Huber if ``huber_c``.

    ``weight``: a scalar or per-sample ``[B]`` weight λ(σ_k). The target is detached here too, so
    passing a tensor that still carries a graph cannot leak gradient into the target network.
    """
    if student_x0.shape != target_x0.shape:
        raise ValueError(f"student x0 {tuple(student_x0.shape)} and target {tuple(target_x0.shape)} differ in shape")
    diff = student_x0.to(dtype) - target_x0.detach().to(dtype)
    if huber_c is None:
        d = diff.square()
    else:
        c = float(huber_c)
        d = (diff.square() + c * c).sqrt() - c
    if weight is not None:
        d = d * _sigma(weight, d, dtype)
    return d.mean()


def consistency_distillation_loss(
    student_x0: torch.Tensor,
    x_t: torch.Tensor,
    sigma: float,
    sigma_next: float,
    teacher_velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    target_velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    huber_c: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``L_CD`` for a student x0-prediction ``student_x0 = f_θ(x_t, σ)`` (with grad) at one of its steps.

    ``teacher_velocity(x, t)`` / ``target_velocity(x, t)`` are velocity functions (``t = σ·1000``, ``[B]``):
    the (CFG) teacher, and the target network — the student itself in DOLLAR, called here without grad.
    ``sigma_next < sigma`` is the student's next step (0 after its last: the target is then the teacher's
    one-step x0 and the target network is not called). Returns the scalar loss (fp64 by default);
    gradient reaches only ``student_x0``.
    """
    if not 0 <= sigma_next < sigma:
        raise ValueError(f"need 0 <= sigma_next < sigma, got sigma={sigma}, sigma_next={sigma_next}")
    batch = x_t.shape[0]

    def timestep(s: float) -> torch.Tensor:
        return torch.full((batch,), s * NUM_TRAIN_TIMESTEPS, device=x_t.device, dtype=torch.float32)

    with torch.no_grad():
        x_t = x_t.detach()
        x_next = teacher_ode_step(x_t, teacher_velocity(x_t, timestep(sigma)), sigma, sigma_next, dtype=dtype)
        v_target = None
        if sigma_next > 0:
            v_target = target_velocity(x_next.to(x_t.dtype), timestep(sigma_next))
        target = consistency_target(x_next, sigma_next, v_target, dtype=dtype)
    return consistency_loss(student_x0, target, huber_c=huber_c, dtype=dtype)
