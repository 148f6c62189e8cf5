"""Clip sampling, config, the sample contract, determinism, collate, transform, mixing and the factory."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from dexwm_model.config import ConfigError, config_dir
from dexwm_model.datasets import (
    ClipTransform,
    DatasetFormatError,
    DroidRaw,
    MixedDataset,
    SimEpisodes,
    build_datasets,
    collate_clips,
    load_datasets_config,
)
from dexwm_model.datasets.config import ClipConfig
from dexwm_model.datasets.sampling import clip_starts, sample_clip, start_slots
from dexwm_model.encoders.preprocess import ImagePreprocessor
from test_datasets_helpers import DROID_RAW, SIM, clip_config, write_droid_episode, write_sim_folder

# ------------------------------------------------------------------------------------------------- sampling


def test_clip_starts_need_room_for_k_frames_inside_the_window():
    t = np.arange(50) / 10.0  # 10 Hz, 4.9 s
    np.testing.assert_array_equal(clip_starts(t, 9, 4.0, 0.1), np.arange(42))  # 8 more frames after the start
    # gaps of >= 0.5 s: 8 gaps need 40 frames = exactly 4.0 s
    np.testing.assert_array_equal(clip_starts(t, 9, 4.0, 0.5), np.arange(10))
    assert len(clip_starts(t, 9, 3.9, 0.5)) == 0
    assert len(clip_starts(t[:8], 9, 4.0, 0.0)) == 0


def test_sampled_clips_are_irregular_and_respect_window_and_gap():
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.02, 0.06, 400))  # irregular frame times (~25 Hz)
    starts = clip_starts(t, 9, 4.0, 0.1)
    gaps = set()
    for s in rng.choice(starts, 50):
        idx = sample_clip(t, int(s), 9, 4.0, 0.1, rng)
        assert idx[0] == s and len(idx) == 9 and np.all(np.diff(idx) > 0)
        assert t[idx[-1]] - t[idx[0]] <= 4.0 + 1e-9
        assert np.all(np.diff(t[idx]) >= 0.1 - 1e-9)
        gaps.update(np.round(np.diff(t[idx]), 6).tolist())
    assert len(gaps) > 100  # not a fixed stride


def test_tight_window_falls_back_to_the_only_feasible_clip():
    t = np.arange(60) / 10.0
    # gaps >= 0.45 s at 10 Hz means >= 5 frames; 8 of them fill the 4 s window exactly: one solution from frame 3
    idx = sample_clip(t, 3, 9, 4.0, 0.45, np.random.default_rng(1))
    np.testing.assert_array_equal(idx, 3 + 5 * np.arange(9))


def test_start_slots_cover_the_valid_starts_by_stride():
    t = np.arange(100) / 10.0
    starts = clip_starts(t, 9, 4.0, 0.1)  # 0..91
    slots = start_slots(t, starts, 2.0)
    assert len(slots) == 5 and [len(s) for s in slots] == [20, 20, 20, 20, 12]
    np.testing.assert_array_equal(np.concatenate(slots), starts)


# --------------------------------------------------------------------------------------------------- config


def test_default_config_file_is_complete_and_checked(tmp_path):
    cfg = load_datasets_config()
    assert cfg.clip.num_frames == cfg.clip.context_frames + 1 == 9 and cfg.clip.window_s == 4.0
    data = yaml.safe_load((config_dir() / "datasets.yaml").read_text())
    data["clip"]["min_gap_s"] = 0.6  # 8 gaps of 0.6 s > 4 s
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"8 gaps of at least min_gap_s=0.6 s do not fit in window_s=4.0 s"):
        load_datasets_config(bad)
    data["clip"]["min_gap_s"] = 0.1
    data["droid_raw"]["camera"] = "left"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"droid_raw.camera: expected one of \['ext1', 'ext2', 'wrist'\]"):
        load_datasets_config(bad)


# ------------------------------------------------------------------------------------------ sample contract


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    write_sim_folder(root, (30, 22))
    return root


def test_sample_contract_and_determinism(sim_root):
    ds = SimEpisodes(sim_root, SIM, clip_config())
    assert len(ds) == sum(len(s) for s in ds._slots) >= 2
    s = ds[1]
    k = 4
    assert s["frames"].dtype == torch.uint8 and s["frames"].shape == (k, 24, 32, 3)
    assert s["times"].dtype == torch.float32 and s["times"][0] == 0 and torch.all(torch.diff(s["times"]) > 0)
    assert float(s["times"][-1]) <= 2.0 + 1e-6
    assert s["actions"].dtype == torch.float32 and s["actions"].shape == (k - 1, 132)
    assert s["keypoints_px"].dtype == torch.float32 and s["keypoints_px"].shape == (k, 12, 2)
    assert s["keypoints_valid"].dtype == torch.bool and s["keypoints_valid"].shape == (k, 12)
    assert s["hand_loss"] is True and s["source"] == "sim" and s["image_size"] == (24, 32)
    # the same item draws the same frames; other items and other epochs draw others
    again = SimEpisodes(sim_root, SIM, clip_config())
    assert torch.equal(again[1]["frame_indices"], s["frame_indices"])
    draws = {tuple(ds[i]["frame_indices"].tolist()) for i in range(len(ds))}
    assert len(draws) == len(ds)
    before = [tuple(ds.draw(i)[1]) for i in range(len(ds))]
    ds.set_epoch(1)
    assert [tuple(ds.draw(i)[1]) for i in range(len(ds))] != before
    other_seed = SimEpisodes(sim_root, SIM, clip_config(seed=5))
    assert [tuple(other_seed.draw(i)[1]) for i in range(len(ds))] != before
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_short_episode_is_an_error_or_skipped(tmp_path):
    write_sim_folder(tmp_path, (30, 3))
    with pytest.raises(DatasetFormatError, match=r"episode_000001.h5: episode too short for one clip: 3 frames"):
        SimEpisodes(tmp_path, SIM, clip_config())
    ds = SimEpisodes(tmp_path, SIM, clip_config(short_episodes="skip"))
    assert [e.name for e in ds.episodes] == ["episode_000000"]
    assert ds.skipped[0][0] == "episode_000001" and ds.summary()["skipped"] == 1
    with pytest.raises(DatasetFormatError, match="no episodes found"):
        SimEpisodes(tmp_path, type(SIM)(root=None, pattern="nothing_*.h5"), clip_config())
    with pytest.raises(DatasetFormatError, match="dataset path not found"):
        SimEpisodes(tmp_path / "missing", SIM, clip_config())


# -------------------------------------------------------------------------------------- collate / transform


def test_collate_with_dataloader_and_transform(sim_root, tmp_path):
    ds = SimEpisodes(sim_root, SIM, clip_config())
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_clips)))
    assert batch["frames"].shape == (3, 4, 24, 32, 3) and batch["actions"].shape == (3, 3, 132)
    assert batch["hand_loss"].dtype == torch.bool and batch["hand_loss"].tolist() == [True] * 3
    assert batch["source"] == ["sim"] * 3 and batch["image_size"] == (24, 32)
    for i in range(3):
        assert torch.equal(batch["frame_indices"][i], ds[i]["frame_indices"])

    write_droid_episode(tmp_path, "ep1")
    droid = DroidRaw(tmp_path, DROID_RAW, clip_config())
    with pytest.raises(ValueError, match=r"sample 1 \(droid episode 'ep1'\) has 'frames'.*apply a ClipTransform"):
        collate_clips([ds[0], droid[0]])

    tf = ClipTransform.for_size(16)
    a, b = tf(ds[0]), tf(droid[0])
    batch = collate_clips([a, b])
    assert batch["frames"].shape == (2, 4, 3, 16, 16) and batch["frames"].dtype == torch.float32
    assert batch["image_size"] == (16, 16) and batch["source_image_size"] == [(24, 32), (48, 64)]
    assert batch["hand_loss"].tolist() == [True, False]
    # keypoints follow the crop: 24x32 -> short side 16 -> 16x21 (x scale 21/32, y scale 16/24) -> centre crop
    # 16x16 starting 2 px from the left
    raw = ds[0]
    uv = raw["keypoints_px"].double() * torch.tensor([21 / 32, 16 / 24], dtype=torch.float64) - torch.tensor(
        [2.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(a["keypoints_px"].numpy(), uv.numpy(), atol=1e-5)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < 16) & (uv[..., 1] >= 0) & (uv[..., 1] < 16)
    assert torch.equal(a["keypoints_valid"], raw["keypoints_valid"] & inside)
    assert not torch.equal(a["keypoints_valid"], raw["keypoints_valid"])  # some points leave the crop
    expect = ImagePreprocessor(16)(raw["frames"], layout="hwc")
    assert torch.allclose(a["frames"], expect)


# ------------------------------------------------------------------------------------------------- mixing


def test_mixed_dataset_is_weighted_and_deterministic(sim_root, tmp_path):
    sim = SimEpisodes(sim_root, SIM, clip_config())
    write_droid_episode(tmp_path, "ep1", n=60)
    droid = DroidRaw(tmp_path, DROID_RAW, clip_config())
    mix = MixedDataset({"sim": sim, "droid": droid}, {"sim": 3.0, "droid": 1.0}, samples_per_epoch=41, seed=7)
    eff = mix.effective_mix()
    assert eff["sim"]["samples"] + eff["droid"]["samples"] == 41
    assert (eff["sim"]["samples"], eff["droid"]["samples"]) == (31, 10)  # 30.75 / 10.25, largest remainder
    assert eff["sim"]["weight_share"] == pytest.approx(0.75) and eff["droid"]["share"] == pytest.approx(10 / 41)
    located = [mix.locate(i) for i in range(41)]
    assert sum(n == "droid" for n, _ in located) == 10
    # each dataset's items are used without repetition before any repeats
    droid_items = [i for n, i in located if n == "droid"]
    assert len(set(droid_items[: len(droid)])) == min(len(droid), len(droid_items))
    assert mix[0]["source"] == ("sim" if located[0][0] == "sim" else "droid")
    same = MixedDataset({"sim": sim, "droid": droid}, {"sim": 3.0, "droid": 1.0}, samples_per_epoch=41, seed=7)
    assert [same.locate(i) for i in range(41)] == located
    other = MixedDataset({"sim": sim, "droid": droid}, {"sim": 3.0, "droid": 1.0}, samples_per_epoch=41, seed=8)
    assert [other.locate(i) for i in range(41)] != located
    mix.set_epoch(1)
    assert [mix.locate(i) for i in range(41)] != located and sim.epoch == 1 and droid.epoch == 1
    assert "41 samples per epoch" in mix.report() and "droid" in mix.report()
    with pytest.raises(ValueError, match=r"no weight for dataset\(s\) \['droid'\]"):
        MixedDataset({"sim": sim, "droid": droid}, {"sim": 1.0})
    zero = MixedDataset({"sim": sim, "droid": droid}, {"sim": 1.0, "droid": 0.0})
    assert len(zero) == len(sim) and zero.ignored == ["droid"] and zero.never_drawn == []


def test_a_source_in_use_that_is_never_drawn_is_reported(sim_root, tmp_path):
    sim = SimEpisodes(sim_root, SIM, clip_config())
    write_droid_episode(tmp_path, "ep1", n=60)
    droid = DroidRaw(tmp_path, DROID_RAW, clip_config())
    # weight 0.1 of 2 samples per epoch: 0.18 of a sample rounds to none
    with pytest.warns(UserWarning, match=r"source\(s\) in use that are never drawn: 'droid' \(weight share 9.09% of 2 "
                                         r"samples"):
        mix = MixedDataset({"sim": sim, "droid": droid}, {"sim": 1.0, "droid": 0.1}, samples_per_epoch=2, seed=0)
    assert mix.never_drawn == ["droid"] and mix.effective_mix()["droid"]["samples"] == 0
    assert "weight > 0 but 0 samples per epoch (never drawn): droid" in mix.report()


# ------------------------------------------------------------------------------------------------- factory


def test_build_datasets_from_yaml(sim_root, tmp_path):
    data = yaml.safe_load((config_dir() / "datasets.yaml").read_text())
    write_droid_episode(tmp_path / "droid", "ep1")
    data["clip"].update(context_frames=3, window_s=2.0, clip_stride_s=1.0)
    data["sim"]["root"] = str(sim_root)
    data["droid_raw"]["root"] = str(tmp_path / "droid")
    data["mix"] = {"weights": {"sim": 1.0, "droid_raw": 1.0}, "samples_per_epoch": 10, "seed": 0}
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(data))
    built = build_datasets(path, transform=ClipTransform.for_size(16))
    assert sorted(built.sources) == ["droid_raw", "sim"] and len(built.mixed) == 10
    assert built.summary()["mix"]["sim"]["samples"] == 5
    assert collate_clips([built.mixed[i] for i in range(4)])["frames"].shape == (4, 4, 3, 16, 16)
    data["mix"]["weights"] = {"sim": 1.0}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"mix.weights has no weight for source\(s\) \['droid_raw'\]"):
        build_datasets(path)
    with pytest.raises(ConfigError, match="no source has a root"):
        build_datasets(load_datasets_config())
    assert isinstance(load_datasets_config().clip, ClipConfig) and Path(path).exists()
