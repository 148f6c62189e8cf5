"""Two CPU processes (gloo) train as one DistributedDataParallel run: identical weights on both ranks, and the
same result when the run is repeated."""

import json

import torch

from dexwm_model.training import ModelSpec, TrainRequest, build_world_model
from dexwm_model.training.data import build_clip_data
from dexwm_model.training.distributed import launch_local
from dexwm_model.world_model import WorldModel
from test_training_helpers import TINY_MODEL, ddp_train_twice, tiny_config, write_episodes


def test_two_process_gloo_training_is_consistent_and_deterministic(tmp_path):
    sim = write_episodes(tmp_path / "sim")
    cfg = tiny_config(tmp_path, max_steps=3, checkpoint_every=100)
    roots = {"sim": str(sim)}
    # encode the episodes once up front (the ranks would otherwise share the work)
    encoder = build_world_model(ModelSpec(**TINY_MODEL)).encoder
    build_clip_data(roots, cfg.data.datasets, 5, encoder, torch.device("cpu"), True, cfg.data.cache_dir)
    runs = [tmp_path / "run1", tmp_path / "run2"]
    launch_local(2, ddp_train_twice, [TrainRequest(cfg, str(r), roots, progress=False) for r in runs])
    summaries = [json.loads((r / "train_summary.json").read_text()) for r in runs]
    for s in summaries:
        assert s["processes"] == 2 and s["steps"] == 3 and s["micro_batch"] == 2
        digests = s["rank_parameter_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]  # both ranks hold identical weights
    assert summaries[0]["rank_parameter_digests"] == summaries[1]["rank_parameter_digests"]
    w1, w2 = (WorldModel.load(r / "final").state_dict() for r in runs)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    start = build_world_model(cfg.model, cfg.seed).state_dict()
    assert any(not torch.equal(start[k], w1[k]) for k in w1 if k.startswith("predictor."))  # it did train
    rec = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec] == [1, 2, 3]
    assert not (tmp_path / "run1" / "metrics.jsonl.rank1").exists()
