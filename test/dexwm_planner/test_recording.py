"""RunRecording: a real goal-image MPC run written to an .rrd file, read back with rerun's own reader (entities,
row counts, timelines, keypoint values), imagined frames only with a decoder that fits, bad input, and the file
opened in rerun's bundled web viewer in headless Chromium (served from 127.0.0.1) with a screenshot showing the
camera and goal images."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from dexwm_model.decoder import LatentDecoder
from dexwm_model.encoders.factory import EncoderConfig
from dexwm_model.encoders.sim_vit import tensors_sha256
from dexwm_model.predictor.config import HandHeadConfig, load_predictor_config
from dexwm_model.world_model import WorldModel, WorldModelConfig
from dexwm_planner.mpc import GoalImageMPC, MPCConfig
from dexwm_planner.planners import Planner
from dexwm_planner.recording import RunRecording, decoder_mismatch
from test_mpc import IMAGE, randomize, small_planner_config, tiny_world_model

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
CAMERA_BLOCK = (255, 0, 255)  # magenta block in every camera frame
GOAL_BLOCK = (0, 0, 255)  # blue block in the goal image
STEPS = 3


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def identity_world_model() -> WorldModel:
    """A tiny world model predicting encoder tokens directly (no projection), so a decoder can draw them."""
    enc = EncoderConfig(kind="dinov2", size="S", image_size=[IMAGE, IMAGE], random_init=True, seed=0)
    cfg = WorldModelConfig(encoder=enc, predictor=load_predictor_config("tiny"),
                           hand_head=HandHeadConfig(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0,
                                                    loss_weight=100.0, refine_radius_px=2),
                           latent_dim=384)
    model = WorldModel(cfg)
    randomize(model.predictor, 1)
    randomize(model.hand_head, 2)
    return model.eval()


def make_mpc(model: WorldModel) -> GoalImageMPC:
    return GoalImageMPC(model, Planner(model, small_planner_config()), MPCConfig(context_frames=4,
                                                                                 frame_period_s=0.2))


def frames() -> tuple[list[np.ndarray], np.ndarray]:
    """Camera frames (noise around a magenta block that moves right) and a goal image (a blue block)."""
    rng = np.random.default_rng(0)
    cams = []
    for i in range(STEPS):
        img = rng.integers(0, 90, (224, 224, 3), dtype=np.uint8)
        img[40:150, 30 + 10 * i:130 + 10 * i] = CAMERA_BLOCK
        cams.append(img)
    goal = rng.integers(0, 90, (224, 224, 3), dtype=np.uint8)
    goal[60:170, 80:190] = GOAL_BLOCK
    return cams, goal


def joints(i: int) -> np.ndarray:
    from dexwm_robot.scene import load_sim_config

    q = np.asarray(load_sim_config()[0].home, dtype=np.float64)
    q[0] += 0.05 * i  # the arm turns: the actual keypoints move between steps
    return q


def record_run(path: Path, mpc: GoalImageMPC, decoder=None) -> tuple[RunRecording, list]:
    cams, goal = frames()
    mpc.set_goal(goal, "reach")
    steps = []
    with RunRecording(path, mpc, decoder=decoder, name="test run") as rec:
        rec.log_goal(goal)
        for i, img in enumerate(cams):
            mpc.observe(img, joints(i), 0.4 * i)
            st = mpc.plan()
            steps.append(st)
            assert rec.log_step(i, img, joints(i), st, t=0.4 * i, scalars={"distance_m": 0.3 - 0.1 * i}) > 0
    return rec, steps


def read_rrd(path: Path) -> dict[str, list]:
    """Entity path -> the record batches of its chunks (rerun's own reader)."""
    from rerun.chunk import RrdReader

    out: dict[str, list] = defaultdict(list)
    for chunk in RrdReader(path).stream():
        out[chunk.entity_path].append(chunk.to_record_batch())
    return out


def texts(batches: list) -> list[str]:
    """The TextLog notes (one list of strings per row)."""
    return [t for row in column(batches, "TextLog:text") for t in row]


def rows(batches: list) -> int:
    return sum(b.num_rows for b in batches)


def column(batches: list, suffix: str) -> list:
    """The values of the column whose name ends with ``suffix``, over the batches that have it."""
    values = []
    for b in batches:
        names = [n for n in b.schema.names if n.endswith(suffix)]
        if names:
            values += b.column(names[0]).to_pylist()
    return values


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    model = identity_world_model()
    mpc = make_mpc(model)
    decoder = LatentDecoder.for_encoder(model.encoder, width=32, depth=1, heads=2, refine_channels=0)
    path = tmp_path_factory.mktemp("rrd") / "reach_0.rrd"
    rec, steps = record_run(path, mpc, decoder)
    return path, mpc, rec, steps


def test_recording_holds_every_stream(recorded):
    path, mpc, rec, steps = recorded
    data = read_rrd(path)
    for entity, n in {"/camera/image": STEPS, "/camera/keypoints/actual": STEPS, "/camera/keypoints/predicted": STEPS,
                      "/imagined/plan": STEPS, "/costs/observation": STEPS, "/costs/best_plan": STEPS,
                      "/timing/planning_s": STEPS, "/timing/recording_s": STEPS, "/task/distance_m": STEPS,
                      "/errors/keypoint_px": STEPS - 1, "/goal/image": 1, "/goal/keypoints": 1}.items():
        assert rows(data.get(entity, [])) == n, (entity, sorted(data))
    assert "/log" not in data  # a fitting decoder: nothing to note
    # joints: 7 + 16 named series, one row per step (plus the static series names)
    arm = [v for v in column(data["/joints/arm"], "Scalars:scalars") if v is not None]
    hand = [v for v in column(data["/joints/hand"], "Scalars:scalars") if v is not None]
    assert [len(v) for v in arm] == [7] * STEPS and [len(v) for v in hand] == [16] * STEPS
    np.testing.assert_allclose(np.array(arm)[:, 0], [joints(i)[0] for i in range(STEPS)], rtol=1e-6)
    # the shared timelines
    for b in data["/camera/image"]:
        assert {"step", "wall_time", "time"} <= set(b.schema.names)
    assert column(data["/camera/image"], "step") == list(range(STEPS))
    # costs are the plan's; the imagined strip is T decoded frames side by side
    np.testing.assert_allclose(column(data["/costs/best_plan"], "Scalars:scalars"),
                               [[s.cost] for s in steps], rtol=1e-6)
    assert mpc.last_predicted_latents is not None and rec.overhead()["steps"] == STEPS
    # the actual keypoints are the FK of the measured joints mapped to camera pixels
    last = np.array(column(data["/camera/keypoints/actual"], "Points2D:positions")[-1])
    with torch.no_grad():
        uv = mpc.planner.kin.hand_pixels(torch.as_tensor(joints(STEPS - 1), dtype=torch.float32)).double().numpy()
    want = mpc.keypoints_to_image(uv, (224, 224))
    np.testing.assert_allclose(last, want[np.isfinite(want).all(axis=1)], atol=1e-3)


def test_mismatched_decoder_is_noted_once_and_skipped(tmp_path):
    model = tiny_world_model()  # latent_dim 32 through a learned projection: no decoder can draw its latents
    decoder = LatentDecoder.for_encoder(model.encoder, width=32, depth=1, heads=2, refine_channels=0)
    path = tmp_path / "mismatch.rrd"
    record_run(path, make_mpc(model), decoder)
    data = read_rrd(path)
    assert "/imagined/plan" not in data
    notes = texts(data["/log"])
    assert len(notes) == 1 and "does not fit" in notes[0] and "projection" in notes[0]


def test_committed_decoders_fit_the_committed_world_model():
    """checkpoints/world_model_sim_cpu embeds the encoder_sim_vit tensors: its bundled decoder and decoder_sim_vit
    both fit it (checked by the encoder tensors' digest), and neither fits an encoder with other weights."""
    model = WorldModel.load(REPO / "checkpoints" / "world_model_sim_cpu")
    for folder in (REPO / "checkpoints" / "world_model_sim_cpu" / "decoder", REPO / "checkpoints" / "decoder_sim_vit"):
        decoder = LatentDecoder.load(folder)
        assert decoder_mismatch(decoder, model) is None
        with torch.no_grad():
            next(iter(model.encoder.backbone.parameters())).add_(1e-3)
        model.encoder.info = {**model.encoder.info, "tensors_sha256": tensors_sha256(model.encoder.backbone)}
        reason = decoder_mismatch(decoder, model)
        assert reason is not None and "encoder tensors" in reason
        model = WorldModel.load(REPO / "checkpoints" / "world_model_sim_cpu")


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\.rrd"):
        RunRecording(tmp_path / "run.mcap")
    with pytest.raises(ValueError, match="no such folder"):
        RunRecording(tmp_path / "a.rrd", make_mpc(tiny_world_model()), decoder=tmp_path / "missing")
    rec = RunRecording(tmp_path / "b.rrd")
    with pytest.raises(ValueError, match=r"joints must have shape \(23,\)"):
        rec.log_step(0, np.zeros((8, 8, 3), np.uint8), np.zeros(7))
    with pytest.raises(ValueError, match="uint8"):
        rec.log_step(0, np.zeros((8, 8, 3), np.float32), np.zeros(23))
    rec.log_step(0, np.zeros((8, 8, 3), np.uint8), np.zeros(23))  # no mpc: image and joints only
    rec.close()
    with pytest.raises(RuntimeError, match="closed"):
        rec.note("late")
    assert rows(read_rrd(tmp_path / "b.rrd")["/camera/image"]) == 1


# ------------------------------------------------------------------------------------------ the web viewer
SERVER = textwrap.dedent("""
    import functools, http.server, sys, threading, time
    import rerun as rr
    folder, data_port, viewer_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    class Files(http.server.SimpleHTTPRequestHandler):
        def end_headers(self):
            self.send_header("Access-Control-Allow-Origin", "*")
            super().end_headers()
        def log_message(self, *args):
            pass
    files = http.server.ThreadingHTTPServer(("127.0.0.1", data_port), functools.partial(Files, directory=folder))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    rr.serve_web_viewer(web_port=viewer_port, open_browser=False)
    print("ready", flush=True)
    time.sleep(600)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def colour_pixels(shot: np.ndarray, colour: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(shot[..., :3].astype(int) - np.array(colour)).max(axis=-1) <= tol).sum())


def test_recording_opens_in_the_web_viewer(recorded, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package chromium, debian-packages.txt)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    path = recorded[0]
    data_port, viewer_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(path.parent), str(data_port), str(viewer_port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "RERUN_ANALYTICS": "0"})
    try:
        assert server.stdout.readline().strip() == "ready", "the viewer server did not start"
        with sync_playwright() as pw:
            # software WebGL (SwiftShader): no GPU needed
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), timeout=120_000, args=[
                "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                url = f"http://127.0.0.1:{viewer_port}/?url=http://127.0.0.1:{data_port}/{path.name}"
                page.goto(url, timeout=120_000)
                shot_file = tmp_path / "viewer.png"
                deadline = time.monotonic() + 90.0  # generous: the machine may be loaded
                camera = goal = 0
                while time.monotonic() < deadline:
                    page.screenshot(path=str(shot_file))
                    shot = np.asarray(Image.open(shot_file).convert("RGB"))
                    camera, goal = colour_pixels(shot, CAMERA_BLOCK), colour_pixels(shot, GOAL_BLOCK)
                    if camera > 1000 and goal > 300:
                        break
                    time.sleep(1.0)
            finally:
                browser.close()
        # the viewer drew the recording: the camera view shows the magenta block, the goal view the blue one
        assert camera > 1000 and goal > 300, (f"screenshot {shot_file}: {camera} magenta and {goal} blue pixels "
                                              "(the viewer did not show the recording's images)")
    finally:
        server.kill()
        server.wait(timeout=10)
