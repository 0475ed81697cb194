"""The toy world: synthetic videos with exact ground truth, tiny Wan-VACE components and a teacher
pre-trained on them, so the whole VDOT recipe runs for real on a CPU.

- :mod:`.world` — procedural clips (1–2 large flat-coloured shapes / stick figures on plain, striped or
  checkered backgrounds, camera pans) with depth, flow, pose keypoints, edges and object masks;
- :mod:`.captions` — the caption grammar;
- :mod:`.dataset` — clips + all task inputs + JSONL manifest (``training/data/manifest.py`` format);
- :mod:`.components` — toy tokenizer / UMT5 text encoder, and the toy Wan VAE trained on the world;
- :mod:`.teacher` — flow-matching pre-training of the toy VACE teacher (and its T2V twin);
- :mod:`.cli` — ``vdot toy world | components | teacher | build | report``.
"""
