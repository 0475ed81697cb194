"""VDOT distillation losses: DMD, OTD (entropic OT), fake-score denoising, relativistic GAN, consistency (DOLLAR)."""

from .consistency import consistency_distillation_loss, consistency_loss, consistency_target, teacher_ode_step
from .critic import critic_denoising_loss, flow_matching_noise
from .dmd import DMD_NORMALIZERS, dmd_gradient, dmd_loss, dmd_normalizer, stopgrad_mse
from .gan import approx_r1_penalty, gan_d_loss, gan_g_loss
from .otd import (
    CLOUDS,
    VARIANTS,
    OTDTargets,
    SinkhornResult,
    entropic_ot_value,
    from_point_cloud,
    gather_cloud,
    local_rows,
    ot_cost_matrix,
    otd_loss,
    otd_targets,
    sinkhorn_log,
    to_point_cloud,
)
from .otd_pooled import (
    OT_GRADIENTS,
    envelope_gradient,
    frame_unit_normalize,
    pooled_frame_clouds,
    pooled_ot_gradient,
    pooled_otd_loss,
    sinkhorn_unrolled,
)

__all__ = [
    "CLOUDS", "DMD_NORMALIZERS", "OT_GRADIENTS", "VARIANTS", "OTDTargets", "SinkhornResult",
    "envelope_gradient", "frame_unit_normalize", "pooled_frame_clouds", "pooled_ot_gradient", "pooled_otd_loss",
    "sinkhorn_unrolled",
    "approx_r1_penalty", "consistency_distillation_loss", "consistency_loss", "consistency_target", "critic_denoising_loss", "dmd_gradient", "dmd_loss", "dmd_normalizer",
    "entropic_ot_value", "flow_matching_noise", "from_point_cloud", "gan_d_loss", "gan_g_loss",
    "gather_cloud", "local_rows", "ot_cost_matrix", "otd_loss", "otd_targets", "sinkhorn_log",
    "stopgrad_mse", "teacher_ode_step", "to_point_cloud",
]
