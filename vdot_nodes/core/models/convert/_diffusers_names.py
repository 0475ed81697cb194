"""diffusers' own single-file converters, run on key names only."""

from __future__ import annotations


def diffusers_converter_names(keys, component: str) -> dict[str, str]:
    """``{diffusers name: original name}`` from diffusers' Wan ``component`` converter.

    The Wan transformer (VACE) and VAE converters only rename keys, so passing each name as its own
    value gives the mapping without touching a tensor (and works for 14B on any machine).
    """
    from diffusers.loaders import single_file_utils as sfu

    convert = sfu.convert_wan_transformer_to_diffusers if component == "transformer" else sfu.convert_wan_vae_to_diffusers
    keys = list(keys)
    out = convert({k: k for k in keys})
    if len(out) != len(keys) or not all(isinstance(v, str) for v in out.values()):
        raise RuntimeError(f"diffusers' {convert.__name__} did not rename keys one-to-one; this diffusers version is not supported")
    return out
