"""dexwm_world_model_node over DDS: a tiny random-init checkpoint, camera frames published by the test; hand
keypoints of every processed frame, decoded imagined frames only with a decoder (along the planner's plan when one
is fresh), and clear exits for a missing checkpoint or a decoder that does not fit the model."""

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.msg")

from sensor_msgs.msg import Image, JointState  # noqa: E402

from dexwm_ros.conversions import joint_state, numpy_to_image  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe  # noqa: E402
from dexwm_ros.node_process import NodeProcess  # noqa: E402
from dexwm_robot.joint_names import ALL_JOINT_NAMES, CAMERA_OPTICAL_FRAME  # noqa: E402
from dexwm_interfaces.msg import HandKeypoints, PlanStatus  # noqa: E402
from dexwm_model.decoder import DecoderArch, LatentDecoder  # noqa: E402
from dexwm_model.training import ModelSpec, build_world_model  # noqa: E402
from dexwm_planner.planners.config import load_planner_config  # noqa: E402

DOMAIN_ID = 167
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0  # s wall: generous bound on a loaded 2-core machine (never a timing assertion)
IMAGE_HW = (96, 128)  # camera frames the test publishes (the model crops them to 56 x 56)
TINY = {"encoder": {"kind": "dexwm_vit", "size": "micro", "image_size": [56, 56], "random_init": True, "seed": 3,
                    "weights": None},
        "predictor": {"size": "tiny", "depth": 2, "width": 32, "heads": 2, "cond_dim": 32, "time_features": 16},
        "hand_head": {"depth": 1, "width": 32, "heads": 2, "mlp_ratio": 2.0}, "latent_dim": None,
        "train_projection": False}


def tiny_model(seed: int = 5, **changes):
    spec = {**TINY, **changes}
    model = build_world_model(ModelSpec(**spec), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(model.predictor.parameters()) + list(model.hand_head.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))  # away from the zero init: outputs carry the weights
    return model


def launch(log_dir: Path, name: str, *overrides: str) -> NodeProcess:
    return NodeProcess("dexwm_world_model_node", log_dir / f"{name}.log", domain_id=DOMAIN_ID,
                       params="world_model_node.yaml", overrides=["torch_threads:=1", "max_rate_hz:=20.0", *overrides],
                       ros_args=["-r", f"__ns:=/{name}"], ros_log_dir=ROOT / "log" / "ros")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm_node")
    model = tiny_model()
    model.save(root / "model")
    LatentDecoder.for_encoder(model.encoder, width=32, depth=1, heads=2, mlp_ratio=2.0,
                              refine_channels=4).save(root / "decoder")
    # a decoder for another encoder (70 x 70 input: a 5 x 5 token grid): cannot decode this model's latents
    LatentDecoder(DecoderArch(in_dim=32, grid=[5, 5], image_size=[70, 70], width=32, depth=1, heads=2,
                              mlp_ratio=2.0, refine_channels=4)).save(root / "decoder_other")
    return root


class Probe(GraphProbe):
    """Publishes camera frames (and optionally joint states / a plan) into namespace ``ns``; records outputs."""

    def __init__(self, namespaces: list[str], home: np.ndarray) -> None:
        super().__init__("world_model_probe", DOMAIN_ID)
        self.home = home
        self.keypoints = {ns: [] for ns in namespaces}
        self.imagined = {ns: [] for ns in namespaces}
        self.sent: list = []
        self.images = {ns: self.node.create_publisher(Image, f"/{ns}/camera/color/image_raw", 5) for ns in namespaces}
        self.joints = {ns: self.node.create_publisher(JointState, f"/{ns}/joint_states", 5) for ns in namespaces}
        self.plans = {ns: self.node.create_publisher(PlanStatus, f"/{ns}/dexwm/plan_status", 5) for ns in namespaces}
        for ns in namespaces:
            self.node.create_subscription(HandKeypoints, f"/{ns}/dexwm/hand_keypoints",
                                          lambda m, ns=ns: self._add(self.keypoints[ns], m), 10)
            self.node.create_subscription(Image, f"/{ns}/dexwm/imagined_image",
                                          lambda m, ns=ns: self._add(self.imagined[ns], m), 10)
        self.rng = np.random.default_rng(0)

    def _add(self, store: list, msg) -> None:
        with self.lock:
            store.append(msg)

    def publish_frame(self) -> None:
        frame = self.rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
        stamp = self.node.get_clock().now().to_msg()
        for ns, pub in self.images.items():
            pub.publish(numpy_to_image(frame, "rgb8", stamp, CAMERA_OPTICAL_FRAME))
            self.joints[ns].publish(joint_state(ALL_JOINT_NAMES, self.home, np.zeros(23), np.zeros(23), stamp))
        with self.lock:
            self.sent.append(stamp)

    def publish_plan(self, ns: str, waypoints: np.ndarray) -> None:
        msg = PlanStatus(state=PlanStatus.STATE_EXECUTING, joint_names=list(ALL_JOINT_NAMES),
                         num_waypoints=len(waypoints), num_joints=23)
        msg.waypoints = [float(v) for v in waypoints.reshape(-1)]
        self.plans[ns].publish(msg)

    def wait(self, predicate, what: str, procs=(), timeout: float = WAIT):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for p in procs:
                if p.poll() is not None:
                    pytest.fail(f"world model node died (rc {p.returncode}) waiting for {what}:\n{p.log()}")
            self.publish_frame()
            with self.lock:
                value = predicate()
            if value:
                return value
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def home():
    from dexwm_robot.scene import load_sim_config

    return np.asarray(load_sim_config()[0].home, dtype=np.float64)


def _stamp_ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def _stamp_s(stamp) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


def test_keypoints_every_frame_and_imagined_frames_only_with_a_decoder(folders, home, tmp_path):
    plain = launch(tmp_path, "plain", f"checkpoint:={folders / 'model'}")
    decoded = launch(tmp_path, "decoded", f"checkpoint:={folders / 'model'}", f"decoder:={folders / 'decoder'}")
    probe = Probe(["plain", "decoded"], home)
    procs = (plain, decoded)
    try:
        probe.wait(lambda: len(probe.keypoints["plain"]) >= 3 and len(probe.keypoints["decoded"]) >= 3
                   and len(probe.imagined["decoded"]) >= 2, "keypoints from both nodes and imagined frames", procs)
        step_dt = load_planner_config().planner.step_dt
        with probe.lock:
            kps = list(probe.keypoints["plain"])
            sent = {_stamp_s(s) for s in probe.sent}
            sent_ns = {_stamp_ns(s) for s in probe.sent}
            still = list(probe.imagined["decoded"])
        for kp in kps:
            assert kp.side == HandKeypoints.SIDE_RIGHT and kp.header.frame_id == CAMERA_OPTICAL_FRAME
            assert _stamp_s(kp.header.stamp) in sent  # the stamp of the frame it describes
            assert len(kp.positions) == 21 and len(kp.pixels) == 42 and len(kp.confidence) == 21
            assert (kp.image_height, kp.image_width) == IMAGE_HW
            conf = np.asarray(kp.confidence)
            uv = np.asarray(kp.pixels).reshape(21, 2)
            tips = [0, 4, 8, 12, 16, 20]
            others = [i for i in range(21) if i not in tips]
            assert np.all(conf[others] == 0) and np.all(np.isnan(uv[others]))
            assert np.all((conf[tips] >= 0) & (conf[tips] <= 1))
            # the model sees the 96 x 96 centre crop of the 96 x 128 frame: its keypoints land inside that crop
            assert np.all(uv[tips, 0] >= 16 - 0.5 - 1e-3) and np.all(uv[tips, 0] <= 112 - 0.5 + 1e-3)
            assert np.all(uv[tips, 1] >= -0.5 - 1e-3) and np.all(uv[tips, 1] <= 96 - 0.5 + 1e-3)
        # imagined frames: the decoder's 56 x 56 images, depicting imagine_steps (3) steps ahead of their frame
        for img in still:
            assert (img.height, img.width, img.encoding) == (56, 56, "rgb8")
            assert _stamp_ns(img.header.stamp) - round(3 * step_dt * 1e9) in sent_ns
        assert probe.imagined["plain"] == []
        # a fresh plan of 2 waypoints: the imagined frame is the one at its end
        plan = np.stack([home, home]) + 0.05
        n0 = len(probe.imagined["decoded"])

        def along_plan():
            probe.publish_plan("decoded", plan)
            new = probe.imagined["decoded"][n0:]
            sent_ns = {_stamp_ns(s) for s in probe.sent}
            return [m for m in new if _stamp_ns(m.header.stamp) - round(2 * step_dt * 1e9) in sent_ns]

        assert probe.wait(along_plan, "an imagined frame at the end of the 2-waypoint plan", procs)
    finally:
        probe.close()
        logs = {p.log_path.name: p.stop() for p in procs}
    assert "no decoder configured" in logs["plain.log"] and "no imagined frames" in logs["plain.log"]
    assert "imagined frames on /decoded/dexwm/imagined_image" in logs["decoded.log"]
    for name, out in logs.items():
        assert "Traceback" not in out, f"{name}:\n{out}"


def test_missing_checkpoint_or_unusable_decoder_exit_with_the_reason(folders, tmp_path):
    missing = launch(tmp_path, "missing", f"checkpoint:={tmp_path / 'no_such_model'}")
    wrong = launch(tmp_path, "wrong", f"checkpoint:={folders / 'model'}", f"decoder:={folders / 'decoder_other'}")
    empty = launch(tmp_path, "empty")  # the params file's checkpoint: "" (none given)
    outs = {}
    for name, proc in (("missing", missing), ("wrong", wrong), ("empty", empty)):
        try:
            rc = proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.stop()
            pytest.fail(f"{name}: the node kept running")
        outs[name] = (rc, proc.log())
    rc, out = outs["missing"]
    assert rc == 1 and "world-model checkpoint" in out and "no_such_model: no such folder" in out, out
    rc, out = outs["wrong"]
    assert rc == 1 and "decoder" in out and "cannot be used" in out and "[5, 5]" in out, out
    rc, out = outs["empty"]
    assert rc == 1 and "parameter checkpoint is empty" in out, out
