"""The checkpoint-folder helpers shared by the encoder, the latent decoder, the world model and the Diffusion
Policy: the two ways of writing, and the checks every loader runs with its own error type."""

import pytest
import torch
import yaml

from dexwm_model.checkpoint_folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_folder,
    check_format,
    read_config,
    read_folder_config,
    sha256_file,
    write_checkpoint_files,
    write_checkpoint_folder,
)
from dexwm_model.weights_file import read_checked_state


class Missing(FileNotFoundError):
    pass


class Corrupt(ValueError):
    pass


STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
EXPECTED = {"w": (torch.Size([2, 3]), torch.float32)}


def test_in_place_files_leave_the_rest_of_the_folder_and_refuse_non_finite_tensors(tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "decoder").mkdir(parents=True)
    write_checkpoint_files(folder, STATE, {"format": "f", "format_version": 1}, "f", 1, "thing", Corrupt)
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME, "decoder"])
    assert read_config(folder, Corrupt) == {"format": "f", "format_version": 1}
    assert torch.equal(read_checked_state(folder / WEIGHTS_NAME, EXPECTED, CONFIG_NAME, Corrupt)["w"], STATE["w"])
    before = (folder / WEIGHTS_NAME).read_bytes()
    with pytest.raises(Corrupt, match=r"thing for .*ckpt: 1 tensor\(s\) hold NaN or inf"):
        write_checkpoint_files(folder, {"w": torch.tensor([float("nan")])}, {}, "f", 1, "thing", Corrupt)
    assert (folder / WEIGHTS_NAME).read_bytes() == before


def test_whole_folder_is_replaced_and_records_the_weights_sha256(tmp_path):
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    out = write_checkpoint_folder(folder, STATE, lambda sha: {"format": "f", "format_version": 2,
                                                              "weights_sha256": sha}, "f", 2, "encoder", Corrupt)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    data = read_folder_config(out, "f", 2, "make one", Missing, Corrupt)
    assert data["weights_sha256"] == sha256_file(out / WEIGHTS_NAME)
    (out / WEIGHTS_NAME).write_bytes((out / WEIGHTS_NAME).read_bytes() + b" ")
    with pytest.raises(Corrupt, match="does not match weights_sha256"):
        read_folder_config(out, "f", 2, "make one", Missing, Corrupt)


def test_checks_raise_the_callers_error_naming_the_problem(tmp_path):
    with pytest.raises(Missing, match=r"model checkpoint .*nowhere: no such folder \(missing config.yaml .*make one"):
        check_folder(tmp_path / "nowhere", "make one", Missing, label="model checkpoint")
    (tmp_path / "file").write_text("x")
    with pytest.raises(Missing, match="not a folder"):
        check_folder(tmp_path / "file", "make one", Missing)
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / CONFIG_NAME).write_text("format: [unclosed")
    with pytest.raises(Missing, match=r"half: missing model.safetensors \(a checkpoint folder holds"):
        check_folder(folder, "make one", Missing)
    with pytest.raises(Corrupt, match="config.yaml: not valid YAML"):
        read_config(folder, Corrupt)
    (folder / CONFIG_NAME).write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(Corrupt, match="expected a mapping, found list"):
        read_config(folder, Corrupt)
    with pytest.raises(Corrupt, match=r"not a f config \('format' must be 'f', found 'g'\)"):
        check_format({"format": "g"}, folder / CONFIG_NAME, "f", 1, Corrupt)
    with pytest.raises(Corrupt, match="format_version 3 is not supported"):
        check_format({"format": "f", "format_version": 3}, folder / CONFIG_NAME, "f", 1, Corrupt)


def test_every_model_folder_goes_through_the_shared_checks(tmp_path):
    from dexwm_model.encoders.base import EncoderWeightsMissing
    from dexwm_model.encoders.sim_vit import load_sim_vit_folder
    from dexwm_model.world_model import CheckpointError, WorldModel
    from dexwm_planner.baselines.diffusion_policy import DiffusionPolicy, PolicyCheckpointError

    for load, error in ((WorldModel.load, CheckpointError), (DiffusionPolicy.load, PolicyCheckpointError),
                        (load_sim_vit_folder, EncoderWeightsMissing)):
        with pytest.raises(error, match="no such folder"):
            load(tmp_path / "absent")
