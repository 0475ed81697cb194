"""torchrun target for tests/test_train_trust.py (not a test module itself): unreadable rows under 2 ranks.

Run: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_skip_worker.py OUT_DIR``.
Every rank iterates a :class:`ResumableLoader` over 12 rows of which 3 fail to load (so the ranks meet
them at different steps), uninterrupted and resumed from the state after 2 batches; rank 0 writes
``OUT_DIR/results.json`` with every rank's batches and states.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import distributed as D  # noqa: E402
from training.data.manifest import ResumableLoader, ResumableSampler  # noqa: E402
from vdot_nodes.core.errors import VDOTInputError  # noqa: E402

BAD = {2, 5, 6}


class Rows(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        if index in BAD:
            raise VDOTInputError(f"row {index}", "not a readable video", "re-encode it")
        return index


def run(n_batches: int, state: dict | None = None):
    loader = ResumableLoader(Rows(), ResumableSampler(12, seed=4), batch_size=2, max_skipped=3)
    if state:
        loader.load_state_dict(json.loads(json.dumps(state)))
    it = iter(loader)
    batches = [next(it) for _ in range(n_batches)]
    return batches, loader.state_dict()


def main(out: Path) -> None:
    D.init_distributed()
    full, full_state = run(7)
    head, state = run(2)
    tail, resumed_state = run(5, state)
    mine = {"full": full, "resumed": head + tail, "state": state, "full_state": full_state,
            "resumed_state": resumed_state}
    everyone = [None] * D.get_world_size()
    dist.all_gather_object(everyone, mine)
    if D.is_main_process():
        (out / "results.json").write_text(json.dumps(everyone))
    # Both ranks leave together. One CI run aborted rank 1 (SIGABRT, "terminate called without an active
    # exception"), likely one rank leaving the gloo group while the other still used it (not proven).
    D.barrier()
    D.destroy_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
