import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexwm_ros import conversions as conv
from dexwm_robot.joint_names import ALL_JOINT_NAMES, ARM_JOINT_NAMES, HAND_JOINT_NAMES, arm_indices

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding,shape,dtype", [
    ("rgb8", (5, 7, 3), np.uint8), ("bgr8", (5, 7, 3), np.uint8), ("mono8", (5, 7), np.uint8),
    ("rgba8", (4, 3, 4), np.uint8), ("mono16", (6, 5), np.uint16), ("32FC1", (3, 4), np.float32),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_image_round_trip_respects_step(encoding, shape, dtype, pad):
    if np.issubdtype(dtype, np.integer):
        img = RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    else:
        img = RNG.normal(size=shape).astype(dtype)
    row = shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    stamp = Time(sec=3, nanosec=4)
    msg = conv.numpy_to_image(img, encoding, stamp, "cam", step=row + pad)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (shape[0], shape[1], encoding, row + pad)
    assert len(msg.data) == (row + pad) * shape[0]
    assert msg.header.stamp == stamp and msg.header.frame_id == "cam"
    back = conv.image_to_numpy(msg)
    assert back.shape == shape and back.dtype == dtype
    np.testing.assert_array_equal(back, img)


def test_padded_rows_are_skipped_when_reading():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = conv.numpy_to_image(img, "rgb8", step=12)
    raw = np.frombuffer(msg.data, np.uint8).reshape(2, 12).copy()
    raw[:, 9:] = 255  # garbage in the padding must not leak into the pixels
    msg.data = raw.tobytes()
    np.testing.assert_array_equal(conv.image_to_numpy(msg), img)


def test_bgr8_keeps_channel_order_as_stored():
    img = np.zeros((1, 2, 3), np.uint8)
    img[0, 0] = [10, 20, 30]
    msg = conv.numpy_to_image(img, "bgr8")
    assert list(msg.data[:3]) == [10, 20, 30]
    assert conv.image_to_numpy(msg)[0, 0].tolist() == [10, 20, 30]


def test_big_endian_16_bit_image_is_decoded():
    img = np.array([[1, 258]], dtype=np.uint16)
    msg = conv.numpy_to_image(img, "mono16")
    msg.is_bigendian = 1
    msg.data = img.astype(">u2").tobytes()
    np.testing.assert_array_equal(conv.image_to_numpy(msg), img)


def test_image_errors_name_the_field():
    with pytest.raises(ValueError, match="encoding: unsupported 'yuv422'"):
        conv.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "yuv422")
    with pytest.raises(ValueError, match=r"needs shape \(H, W, 3\)"):
        conv.numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="needs dtype uint8, got float32"):
        conv.numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ValueError, match="step: must be at least"):
        conv.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8", step=5)
    msg = conv.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.data = bytes(5)
    with pytest.raises(ValueError, match="Image.data: 5 bytes"):
        conv.image_to_numpy(msg)


def test_joint_state_and_camera_info():
    q = RNG.normal(size=23)
    msg = conv.joint_state(ALL_JOINT_NAMES, q, q * 2, q * 3, Time(sec=1))
    assert list(msg.name) == list(ALL_JOINT_NAMES)
    np.testing.assert_allclose(msg.position, q)
    np.testing.assert_allclose(msg.effort, q * 3)
    with pytest.raises(ValueError, match="JointState.velocity: expected 23"):
        conv.joint_state(ALL_JOINT_NAMES, q, q[:3], q, None)
    K = np.array([[200.0, 0, 100], [0, 210, 90], [0, 0, 1]])
    info = conv.camera_info(K, 200, 180, Time(sec=2), "cam")
    assert (info.width, info.height, info.distortion_model, info.header.frame_id) == (200, 180, "plumb_bob", "cam")
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], K)
    assert list(info.d) == [0.0] * 5 and np.allclose(np.reshape(info.r, (3, 3)), np.eye(3))


def _random_rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_rotation_quaternion_round_trip_including_half_turns():
    mats = [_random_rotation(RNG) for _ in range(50)]
    mats += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3)]
    for R in mats:
        q = conv.rotation_to_quaternion(R)
        assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(conv.quaternion_to_rotation(q), R, atol=1e-9)


def test_transform_and_pose_builders():
    R = _random_rotation(RNG)
    tf = conv.transform_stamped("world", "cam", [1.0, 2.0, 3.0], R, Time(sec=5))
    assert (tf.header.frame_id, tf.child_frame_id) == ("world", "cam")
    r = tf.transform.rotation
    np.testing.assert_allclose(conv.quaternion_to_rotation([r.w, r.x, r.y, r.z]), R, atol=1e-9)
    assert (tf.transform.translation.x, tf.transform.translation.z) == (1.0, 3.0)
    pa = conv.pose_array([(np.zeros(3), np.array([0.0, 0, 0, 2.0]))], Time(), "world")  # normalised
    assert pa.poses[0].orientation.z == pytest.approx(1.0) and pa.header.frame_id == "world"
    with pytest.raises(ValueError, match="rotation: expected a 3x3 matrix or a"):
        conv.pose(np.zeros(3), np.zeros(3))


def test_trajectory_arrays_and_their_errors():
    msg = JointTrajectory(joint_names=["panda_joint3", "panda_joint1"])
    msg.points = [JointTrajectoryPoint(positions=[0.1, 0.2], time_from_start=Duration(sec=1, nanosec=500_000_000)),
                  JointTrajectoryPoint(positions=[0.3, 0.4], time_from_start=conv.seconds_to_duration(2.25))]
    names, t, q, v = conv.trajectory_arrays(msg)
    assert names == ["panda_joint3", "panda_joint1"] and v is None
    np.testing.assert_allclose(t, [1.5, 2.25])
    np.testing.assert_allclose(q, [[0.1, 0.2], [0.3, 0.4]])
    assert arm_indices(names) == [2, 0]
    msg.points[1].positions = [0.3]
    with pytest.raises(ValueError, match=r"points\[1\].positions: expected 2 values"):
        conv.trajectory_arrays(msg)
    with pytest.raises(ValueError, match="points is empty"):
        conv.trajectory_arrays(JointTrajectory(joint_names=["panda_joint1"]))
    with pytest.raises(ValueError, match=r"unknown arm joint name\(s\) \['joint1'\]"):
        arm_indices(["joint1", "panda_joint2"])
    with pytest.raises(ValueError, match="more than once"):
        arm_indices(["panda_joint2", "panda_joint2"])


def test_driver_joint_names():
    assert ARM_JOINT_NAMES[0] == "panda_joint1" and ARM_JOINT_NAMES[-1] == "panda_joint7"
    # index, middle, ring, thumb (the sim's ff, mf, rf, th); the driver numbers the thumb 0
    assert HAND_JOINT_NAMES[:5] == ("ah_joint10", "ah_joint11", "ah_joint12", "ah_joint13", "ah_joint20")
    assert HAND_JOINT_NAMES[-4:] == ("ah_joint00", "ah_joint01", "ah_joint02", "ah_joint03") and len(ALL_JOINT_NAMES) == len(set(ALL_JOINT_NAMES)) == 23


def test_image_data_must_be_exactly_step_times_height():
    """ROS: len(data) == step * height and step >= width * bytes per pixel. Three times the bytes of a mono8 image
    (an RGB frame mislabelled) is refused, not read as grey."""
    from dexwm_ros.images import image_to_rgb

    rgb = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    msg = conv.numpy_to_image(rgb, "rgb8")
    msg.encoding, msg.step = "mono8", 16  # the RGB bytes under a grey label: 3x the data a mono8 image has
    with pytest.raises(ValueError, match=r"Image.data: 768 bytes, expected step \* height = 256 \(exactly: 16 \* 16\)"):
        conv.image_to_numpy(msg)
    with pytest.raises(ValueError, match=r"goal_image: Image.data: 768 bytes, expected step \* height = 256"):
        image_to_rgb(msg, "goal_image")
    msg = conv.numpy_to_image(rgb, "rgb8")
    msg.data = bytes(msg.data) + b"\x00"  # one byte too many
    with pytest.raises(ValueError, match="Image.data: 769 bytes"):
        conv.image_to_numpy(msg)
    msg = conv.numpy_to_image(rgb, "rgb8")
    msg.step = 40  # a row needs 48 bytes
    with pytest.raises(ValueError, match=r"Image.step: 40 is smaller than width \* channels \* bytes per channel = "
                                         r"16 \* 3 \* 1 = 48"):
        conv.image_to_numpy(msg)
    padded = conv.numpy_to_image(rgb, "bgr8", step=52)  # padded rows stay fine
    np.testing.assert_array_equal(image_to_rgb(padded), rgb[:, :, ::-1])
