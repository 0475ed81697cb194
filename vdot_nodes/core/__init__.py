"""Pure torch + diffusers core: VCU, model loading, samplers, pipeline. Never imports ComfyUI."""
