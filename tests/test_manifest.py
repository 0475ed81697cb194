"""training.data.manifest: parsing/validation, dataset items, resumable sharded sampling."""

from __future__ import annotations

import json

import pytest
import torch

from training.data import (
    TASK_FIELDS,
    ManifestDataset,
    ManifestError,
    ResumableLoader,
    ResumableSampler,
    read_manifest,
    sample_to_vcu,
)
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.video_io import write_frames, write_image, write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "clips").mkdir()
    (root / "refs").mkdir()
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 9)[:, None, None, None].expand(9, 24, 40, 3).contiguous()
    write_video(ramp, root / "clips" / "0001.mp4", fps=8)
    write_frames(torch.rand(6, 24, 40, 3, generator=g), root / "clips" / "0001_depth")  # a folder of PNG frames
    write_video(torch.rand(3, 24, 40, 3, generator=g), root / "clips" / "short.mp4")
    write_image(torch.rand(30, 20, 3, generator=g), root / "refs" / "a.png")
    mask = torch.zeros(24, 40, 3)
    mask[:, 20:] = 1.0
    write_image(mask, root / "refs" / "mask.png")
    return root


def write_manifest(root, lines, name="m.jsonl"):
    path = root / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD = [
    {"caption": "a cat"},  # stage 1: caption only
    {"caption": "a dog", "task": "t2v", "video": "clips/0001.mp4"},
    {"caption": "depth", "task": "depth", "video": "clips/0001.mp4", "control": "clips/0001_depth",
     "mask": None, "references": [], "first_frame": None, "meta": {"source": "test"}},
    {"caption": "refs", "task": "r2v", "video": "clips/0001.mp4", "references": ["refs/a.png"]},
    {"caption": "inpaint", "task": "inpaint", "video": "clips/0001.mp4", "mask": "refs/mask.png"},
    {"caption": "ff", "task": "firstframe_depth", "video": "clips/0001.mp4", "control": "clips/0001_depth"},
]


def test_valid_manifest_parses(media):
    path = write_manifest(media, GOOD[:3] + [""] + GOOD[3:])  # blank lines are skipped
    samples = read_manifest(path)
    assert [s.task for s in samples] == ["t2v", "t2v", "depth", "r2v", "inpaint", "firstframe_depth"]
    assert [s.line for s in samples] == [1, 2, 3, 5, 6, 7]
    assert samples[0].video is None and samples[1].video == media / "clips" / "0001.mp4"
    assert samples[2].control.is_dir() and samples[2].meta == {"source": "test"}
    assert samples[3].references == [media / "refs" / "a.png"]
    assert all(s.reward is None for s in samples)
    rated = write_manifest(media, [{"caption": "r", "video": "clips/0001.mp4", "reward": 3}, {"caption": "n", "reward": None}],
                           "rated.jsonl")  # the optional label of a latent reward model (python -m training.reward)
    assert [s.reward for s in read_manifest(rated)] == [3.0, None]
    absolute = write_manifest(media, [{"caption": "abs", "video": str(media / "clips" / "0001.mp4")}], "abs.jsonl")
    assert read_manifest(absolute)[0].video.is_file()
    assert len(TASK_FIELDS) == 20 and all(t in TASK_FIELDS for t in ("reference_pose", "outpaint", "extension"))


@pytest.mark.parametrize(
    "line, field, words",
    [
        ('{"caption": "x", ', "-", "not valid JSON"),
        ('["a list"]', "-", "JSON object"),
        ({"caption": "x", "task": "dance"}, "task", "unknown task"),
        ({"caption": ""}, "caption", "missing or empty"),
        ({"task": "t2v"}, "caption", "missing"),
        ({"caption": "x", "task": "depth", "video": "clips/0001.mp4"}, "control", "needs a control path"),
        ({"caption": "x", "task": "r2v", "video": "clips/0001.mp4"}, "references", "at least one reference"),
        ({"caption": "x", "task": "outpaint"}, "video", "needs a video path"),
        ({"caption": "x", "video": "clips/missing.mp4"}, "video", "file not found"),
        ({"caption": "x", "references": ["refs/nope.png"]}, "references", "image not found"),
        ({"caption": "x", "refrences": ["refs/a.png"]}, "refrences", "unknown field"),
        ({"caption": "x", "video": 3}, "video", "path string"),
        ({"caption": "x", "meta": [1]}, "meta", "JSON object"),
        ({"caption": "x", "reward": "high"}, "reward", "finite number"),
        ({"caption": "x", "reward": True}, "reward", "finite number"),
    ],
)
def test_each_invalid_line_reports_line_field_and_fix(media, line, field, words):
    path = write_manifest(media, [GOOD[0], GOOD[1], line], "bad.jsonl")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    err = info.value
    assert isinstance(err, VDOTInputError)
    assert [(e[0], e[1]) for e in err.errors] == [(3, field)]
    assert words in str(err) and "line 3" in str(err) and "Fix:" in str(err)


def test_all_errors_reported_at_once(media):
    path = write_manifest(media, [{"caption": "x", "task": "dance"}, GOOD[0], {"caption": ""}], "bad2.jsonl")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert [e[0] for e in info.value.errors] == [1, 3]
    missing = write_manifest(path.parent, [{"caption": "x", "video": "clips/missing.mp4"}], "missing.jsonl")
    assert read_manifest(missing, check_files=False)[0].video.name == "missing.mp4"
    with pytest.raises(VDOTInputError, match="not found"):
        read_manifest(media / "nope.jsonl")


def test_dataset_items(media):
    ds = ManifestDataset(write_manifest(media, GOOD), num_frames=5, height=16, width=32)
    assert len(ds) == 6
    item = ds[2]
    assert item["task"] == "depth" and item["caption"] == "depth" and item["line"] == 3
    for key in ("video", "control"):
        t = item[key]
        assert t.shape == (5, 16, 32, 3) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert item["mask"] is None and item["references"] == [] and item["first_frame"] is None
    # The ramp video keeps its frame order (first frames dark, later brighter).
    assert item["video"][0].mean() < item["video"][4].mean()
    assert ds[0]["video"] is None and ds[0]["control"] is None
    refs = ds[3]["references"]
    assert len(refs) == 1 and refs[0].shape == (30, 20, 3)  # native size; the VCU builder places it
    mask = ds[4]["mask"]  # soft (the resize softens the edge); the VCU builder thresholds it at 0.5
    assert mask.shape == (5, 16, 32) and mask.dtype == torch.float32 and 0 <= mask.min() and mask.max() <= 1
    binary = (mask > 0.5).float()
    assert binary[:, :, :16].sum() == 0 and binary[:, :, 16:].min() == 1  # right half white = generate
    ff = ds[5]
    assert torch.equal(ff["first_frame"], ff["video"][0])

    only = ManifestDataset(write_manifest(media, GOOD), 5, 16, 32, tasks=["r2v", "inpaint"])
    assert [s.task for s in only.samples] == ["r2v", "inpaint"]
    with pytest.raises(VDOTInputError, match="4k\\+1"):
        ManifestDataset(write_manifest(media, GOOD), 6, 16, 32)
    with pytest.raises(VDOTInputError, match="multiple of 16"):
        ManifestDataset(write_manifest(media, GOOD), 5, 20, 32)
    with pytest.raises(VDOTInputError, match="unknown task"):
        ManifestDataset(write_manifest(media, GOOD), 5, 16, 32, tasks=["dance"])
    short = ManifestDataset(write_manifest(media, [{"caption": "s", "video": "clips/short.mp4"}], "s.jsonl"), 5, 16, 32)
    with pytest.raises(VDOTInputError, match="3 frames, 5 needed"):
        short[0]


def test_sample_to_vcu_every_task(media):
    from vdot_nodes.core.tasks import TASKS as VCU_TASKS

    assert set(TASK_FIELDS) == set(VCU_TASKS)
    lines = []
    for task, needs in TASK_FIELDS.items():
        line = {"caption": f"a {task}", "task": task}
        line.update({"video": "clips/0001.mp4", "control": "clips/0001_depth", "references": ["refs/a.png"]})
        lines.append({k: v for k, v in line.items() if k in ("caption", "task") or k in needs})
    ds = ManifestDataset(write_manifest(media, lines, "all.jsonl"), num_frames=5, height=16, width=32)
    for i in range(len(ds)):
        item = ds[i]
        vcu = sample_to_vcu(item, generator=torch.Generator().manual_seed(i))
        assert vcu.task == item["task"] and vcu.prompt == item["caption"]
        assert vcu.frames.shape == (5, 16, 32, 3) and vcu.masks.shape == (5, 16, 32), item["task"]
        assert len(vcu.references) == (1 if "references" in TASK_FIELDS[item["task"]] else 0)
        again = sample_to_vcu(item, generator=torch.Generator().manual_seed(i))
        assert torch.equal(vcu.frames, again.frames) and torch.equal(vcu.masks, again.masks)  # seeded
        if item["task"] in ("outpaint", "extension", "inpaint"):
            keep = vcu.masks == 0
            assert keep.any() and (vcu.masks == 1).any()
            assert torch.allclose(vcu.frames[keep], item["video"][keep])  # kept pixels are the real clip
    # meta fixes what is otherwise drawn at random
    item = ds[list(TASK_FIELDS).index("inpaint")]
    item["meta"] = {"box": [0, 0, 8, 16]}
    vcu = sample_to_vcu(item)
    assert vcu.masks[:, :, :8].min() == 1 and vcu.masks[:, :, 8:].max() == 0


def consume(sampler, n):
    out = []
    it = iter(sampler)
    while len(out) < n:
        try:
            out.append(next(it))
        except StopIteration:
            sampler.next_epoch()
            it = iter(sampler)
            continue
        sampler.advance(1)
    return out


def test_sampler_resume_continues_exact_order():
    full = consume(ResumableSampler(11, seed=4, rank=0, world_size=1), 30)  # spans 3 epochs
    assert sorted(full[:11]) == list(range(11)) and full[:11] != full[11:22]  # a new shuffle each epoch
    s = ResumableSampler(11, seed=4, rank=0, world_size=1)
    first = consume(s, 13)
    state = json.loads(json.dumps(s.state_dict()))  # survives the checkpoint's JSON
    resumed = ResumableSampler(11, seed=4, rank=0, world_size=1)
    resumed.load_state_dict(state)
    assert first + consume(resumed, 17) == full
    with pytest.raises(VDOTInputError, match="drawn with seed 4, this run has 5"):
        ResumableSampler(11, seed=5, rank=0, world_size=1).load_state_dict(state)
    with pytest.raises(VDOTInputError, match="covers 11 rows, the data now has 12"):
        ResumableSampler(12, seed=4, rank=0, world_size=1).load_state_dict(state)


def test_sampler_ranks_get_disjoint_shards():
    for drop_last in (True, False):
        shards = [list(ResumableSampler(11, seed=1, rank=r, world_size=3, drop_last=drop_last)) for r in range(3)]
        assert len({len(s) for s in shards}) == 1  # same step count on every rank
        flat = [i for s in shards for i in s]
        if drop_last:
            assert len(flat) == 9 and len(set(flat)) == 9  # disjoint
        else:
            assert len(flat) == 12 and set(flat) == set(range(11))  # covers all, one wrapped repeat
    a = ResumableSampler(10, seed=1, rank=0, world_size=2)
    b = ResumableSampler(10, seed=1, rank=1, world_size=2)
    a.advance(2), b.advance(2)
    assert a.state_dict() == b.state_dict()  # rank-independent state: rank 0's is the one saved
    assert not set(a) & set(b)


@pytest.mark.parametrize("num_workers", [0, 2])  # workers read ahead; the state must not
def test_loader_resume_with_batches_and_epochs(num_workers):
    data = list(range(7))

    def run(n_batches, state=None):
        sampler = ResumableSampler(len(data), seed=2, rank=0, world_size=1)
        loader = ResumableLoader(data, sampler, batch_size=2, num_workers=num_workers)
        if state:
            loader.load_state_dict(state)
        it, out = iter(loader), []
        for _ in range(n_batches):
            out.append(next(it))
        return out, loader.state_dict()

    full, _ = run(8)  # 3 batches per epoch (the 7th sample dropped), so 8 batches span 3 epochs
    first, state = run(5)
    rest, _ = run(3, state)
    assert first + rest == full
    assert state["epoch"] == 1 and state["position"] == 4
