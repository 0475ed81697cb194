"""Training data: JSON Lines manifests, a dataset loading them as tensors, a resumable sharded order."""

from .manifest import (
    CONTROL_KINDS,
    FIELDS,
    TASK_FIELDS,
    ManifestDataset,
    ManifestError,
    ManifestSample,
    ResumableLoader,
    ResumableSampler,
    collate_samples,
    read_manifest,
    sample_to_vcu,
)

__all__ = [
    "CONTROL_KINDS",
    "FIELDS",
    "TASK_FIELDS",
    "ManifestDataset",
    "ManifestError",
    "ManifestSample",
    "ResumableLoader",
    "ResumableSampler",
    "collate_samples",
    "read_manifest",
    "sample_to_vcu",
]
