"""The bag library without ROS: our interface types' hashes, writing (never overwriting), reading back, and the
committed test bag (a real reach episode) being complete, small and readable; damaged bags give clear errors."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from dexwm_ros.bags.errors import BagError, BagExistsError
from dexwm_ros.bags.reading import BagReader, validate_bag
from dexwm_ros.bags.typestore import UnknownTypeError, bag_typestore, interface_types, type_hash
from dexwm_ros.bags.writing import BagWriter

ROOT = Path(__file__).resolve().parents[2]
TEST_BAG = ROOT / "test" / "data" / "bags" / "reach_episode0"
# the hashes rosidl gives our types (rclpy's get_publishers_info_by_topic reports them; test_bags_recorder checks it
# live): a change in a .msg file changes them, and bags recorded before are then of a different type
ROSIDL_HASHES = {
    "dexwm_interfaces/msg/HandKeypoints": "RIHS01_94fabe2b5876346990a8d2ab060ef304ec235bd88986973f6262113ddfec42b6",
    "dexwm_interfaces/msg/PlanStatus": "RIHS01_6b837de5c837db4d2b667a7eb8ec541507fa05e5e44495f0570c553ad8cb439b",
    "dexwm_interfaces/action/RunTask_FeedbackMessage":
        "RIHS01_fb259db4cf3cf70e89b177965a91d6a0e97ace37e1805cd9318487660c1c6573",
    "tf2_msgs/msg/TFMessage": "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
}
EPISODE_TOPICS = {"/joint_states", "/camera/color/image_raw", "/camera/color/camera_info", "/tf", "/tf_static",
                  "/robot_description", "/dexwm/joint_waypoint", "/dexwm/safety/command", "/dexwm/safety/status"}


def test_interface_types_hash_as_rosidl():
    assert {"dexwm_interfaces/action/RunTask_Goal", "dexwm_interfaces/action/RunTask_Result"} <= set(interface_types())
    for msgtype, expected in ROSIDL_HASHES.items():
        assert type_hash(msgtype) == expected, msgtype
    with pytest.raises(UnknownTypeError, match="not known to the bag typestore"):
        type_hash("nobody_msgs/msg/Nothing")


def test_write_read_round_trip_and_no_overwrite(tmp_path):
    store = bag_typestore()
    HK = store.types["dexwm_interfaces/msg/HandKeypoints"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    point = store.types["geometry_msgs/msg/Point"]
    sent = []
    for k in range(5):
        msg = HK(header=Header(stamp=Time(sec=k, nanosec=7), frame_id="cam"), side=2,
                 positions=[point(x=0.1 * k, y=0.0, z=1.0)] * 21, pixels=np.arange(42, dtype=np.float32) + k,
                 image_width=224, image_height=224, confidence=np.full(21, 0.5, np.float32))
        sent.append(store.serialize_cdr(msg, "dexwm_interfaces/msg/HandKeypoints"))
    out = tmp_path / "bag"
    with BagWriter(out) as bag:
        bag.add_topic("/kp", "dexwm_interfaces/msg/HandKeypoints",
                      publisher_hash=ROSIDL_HASHES["dexwm_interfaces/msg/HandKeypoints"])
        for k, data in enumerate(sent):
            bag.write("/kp", 1_000_000_000 + 10 * k, data)
        with pytest.raises(BagError, match="different message definitions"):
            bag.add_topic("/other", "std_msgs/msg/String", publisher_hash="RIHS01_" + "0" * 64)
    with BagReader(out) as bag:
        assert bag.topics["/kp"].type_hash == ROSIDL_HASHES["dexwm_interfaces/msg/HandKeypoints"]
        got = list(bag.messages())
        assert [m.timestamp_ns for m in got] == [1_000_000_000 + 10 * k for k in range(5)]
        assert [m.data for m in got] == sent
        assert bag.deserialize(got[3]).pixels[0] == 3.0
    assert validate_bag(out) == {"/kp": 5}
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(BagExistsError, match="exists already; recordings are never overwritten"):
        BagWriter(out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_metadata_names_the_ros_distro_it_was_recorded_on(tmp_path, monkeypatch):
    import yaml

    from dexwm_ros.bags.writing import ros_distro

    monkeypatch.delenv("ROS_DISTRO", raising=False)
    assert ros_distro() == "kilted"  # the venv's rclpy 9.x wheels
    monkeypatch.setenv("ROS_DISTRO", "humble")
    out = tmp_path / "bag"
    with BagWriter(out) as bag:
        bag.add_topic("/s", "std_msgs/msg/String")
        bag.write("/s", 5, bag_typestore().serialize_cdr(bag_typestore().types["std_msgs/msg/String"](data="x"),
                                                         "std_msgs/msg/String"))
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["ros_distro"] == "humble" and info["message_count"] == 1
    assert validate_bag(out) == {"/s": 1}


def test_committed_bag_is_a_complete_small_episode():
    size = sum(p.stat().st_size for p in TEST_BAG.iterdir())
    assert size <= 5 * 2**20
    counts = validate_bag(TEST_BAG)
    assert EPISODE_TOPICS <= set(counts)
    assert counts["/camera/color/image_raw"] >= 20 and counts["/dexwm/joint_waypoint"] >= 5
    with BagReader(TEST_BAG) as bag:
        for topic in bag.topics.values():
            assert topic.type_hash == type_hash(topic.msgtype), topic.name
            assert topic.offered_qos, f"{topic.name}: no offered QoS recorded"
        assert bag.topics["/tf_static"].offered_qos[0].durability.name == "TRANSIENT_LOCAL"
    meta = (TEST_BAG / "metadata.yaml").read_text()
    assert "version: 9" in meta and "storage_identifier: mcap" in meta


@pytest.mark.parametrize("damage, message", [
    ("truncate", "cannot be opened|damaged after"),
    ("no_metadata", "no metadata.yaml"),
    ("garbage", "cannot be opened|damaged after"),
])
def test_damaged_bag_gives_a_clear_error(tmp_path, damage, message):
    bag = tmp_path / "broken"
    shutil.copytree(TEST_BAG, bag)
    mcap = bag / "reach_episode0.mcap"
    data = mcap.read_bytes()
    if damage == "truncate":
        mcap.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        mcap.write_bytes(data[:50_000] + bytes(range(256)) * 200 + data[100_000:])
    else:
        (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=message) as info:
        validate_bag(bag)
    assert str(bag) in str(info.value)
