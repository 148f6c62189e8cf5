"""Batched torch FK of the Panda + Allegro against MuJoCo's own kinematics, camera projection, I/O, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import mujoco
import numpy as np
import pytest
import torch

from dexwm_hw.sim.camera import camera_model
from dexwm_robot.scene import ROBOT_JOINTS, build_model, load_sim_config
from dexwm_model.kinematics.chain import ChainSpec, KinematicChain, project, world_to_camera
from dexwm_robot.hand_layout import ALLEGRO_KEYPOINT_SITES, ALLEGRO_TO_HAND21
from dexwm_model.kinematics.panda_allegro import (
    FLANGE,
    KEYPOINT_SITE_NAMES,
    PALM_CENTER,
    FKConfig,
    PandaAllegroFK,
)

N_CONFIGS = 200


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small tensors: one thread avoids OpenMP hand-offs that cost milliseconds per op on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return build_model()


@pytest.fixture(scope="module")
def fk(model) -> PandaAllegroFK:
    return PandaAllegroFK.from_mujoco(model)


@pytest.fixture(scope="module")
def configs(model) -> np.ndarray:
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    return np.random.default_rng(7).uniform(lo, hi, size=(N_CONFIGS, 23))


def _qpos_adr(model: mujoco.MjModel) -> np.ndarray:
    return np.array([model.jnt_qposadr[model.actuator_trnid[i, 0]] for i in range(model.nu)])


@pytest.fixture(scope="module")
def reference(model, configs) -> dict[str, np.ndarray]:
    """MuJoCo's site and body poses for every configuration."""
    data = mujoco.MjData(model)
    adr = _qpos_adr(model)
    out: dict[str, list] = {"site_xpos": [], "site_xmat": [], "xpos": [], "xmat": []}
    for q in configs:
        data.qpos[adr] = q
        mujoco.mj_kinematics(model, data)
        for k in out:
            out[k].append(getattr(data, k).copy())
    return {k: np.array(v) for k, v in out.items()}


def _site_ids(model, names):
    return [model.site(n).id for n in names]


# ------------------------------------------------------------------------------------- agreement with MuJoCo
def test_joint_order_is_the_scene_actuator_order(fk):
    assert fk.joint_names == tuple(ROBOT_JOINTS)
    assert fk.n_links == 23  # one link per joint: fixed bodies are folded away


def test_keypoint_sites_match_mujoco_float64(fk, model, configs, reference):
    got = fk.sites(torch.tensor(configs)).numpy()
    want = reference["site_xpos"][:, _site_ids(model, KEYPOINT_SITE_NAMES)]
    assert got.shape == (N_CONFIGS, 17, 3)
    err = np.abs(got - want).max()
    assert err < 1e-9, f"max position error {err} m"


def test_keypoint_sites_match_mujoco_float32(fk, model, configs, reference):
    got = fk.sites(torch.tensor(configs, dtype=torch.float32))
    assert got.dtype == torch.float32
    want = reference["site_xpos"][:, _site_ids(model, KEYPOINT_SITE_NAMES)]
    err = np.abs(got.numpy().astype(np.float64) - want).max()
    assert err < 1e-5, f"max float32 position error {err} m (must be far below 1 mm)"


def test_all_site_frames_match_mujoco(fk, model, configs, reference):
    names = list(KEYPOINT_SITE_NAMES) + [PALM_CENTER, FLANGE]
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        pos, rot = fk.frames(torch.tensor(configs, dtype=dtype), names)
        ids = _site_ids(model, names)
        assert pos.shape == (N_CONFIGS, len(names), 3) and rot.shape == (N_CONFIGS, len(names), 3, 3)
        assert np.abs(pos.double().numpy() - reference["site_xpos"][:, ids]).max() < tol
        want_rot = reference["site_xmat"][:, ids].reshape(N_CONFIGS, len(names), 3, 3)
        assert np.abs(rot.double().numpy() - want_rot).max() < tol * 10
        # proper rotations
        eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
        assert torch.allclose(rot.double() @ rot.double().transpose(-1, -2), eye, atol=tol * 10)


def test_body_frames_match_mujoco(fk, model, configs, reference):
    names = list(fk.body_names)
    assert "allegro/palm" in names and "panda/link0" in names
    assert not any(n in names for n in ("world", "red_cube", "blue_ball")), "objects are not part of the chain"
    pos, rot = fk.frames(torch.tensor(configs[:50]), ["body:" + n for n in names])
    ids = [model.body(n).id for n in names]
    assert np.abs(pos.numpy() - reference["xpos"][:50, ids]).max() < 1e-9
    assert np.abs(rot.numpy() - reference["xmat"][:50, ids].reshape(50, len(ids), 3, 3)).max() < 1e-9


def test_site_wins_over_body_of_same_name(fk):
    q = torch.zeros(23, dtype=torch.float64)
    (site,), (body,) = fk.positions(q, ["allegro/ff_tip"]), fk.positions(q, ["body:allegro/ff_tip"])
    assert torch.allclose(site, fk.positions(q, ["site:allegro/ff_tip"])[0])
    assert abs(float((site - body).norm()) - 0.035) < 1e-9  # the tip site sits 35 mm out on the tip body


def test_default_matches_from_mujoco(fk, configs):
    default = PandaAllegroFK.default()
    q = torch.tensor(configs[:20])
    assert torch.equal(default.sites(q), fk.sites(q))
    assert PandaAllegroFK.default() is not default  # a fresh module each time (safe to .to() it)


# ------------------------------------------------------------------------------------- layout and shapes
def test_hand21_layout(fk, configs):
    q = torch.tensor(configs[:10])
    sites, h = fk.sites(q), fk.hand21(q)
    assert h.shape == (10, 21, 3)
    assert torch.equal(h, sites[:, list(ALLEGRO_TO_HAND21)])
    assert torch.equal(h[:, 0], sites[:, ALLEGRO_KEYPOINT_SITES.index("wrist")])
    assert torch.equal(h[:, 13:17], h[:, 17:21]), "the ring finger is duplicated as the little finger"
    assert torch.equal(h[:, 4], sites[:, ALLEGRO_KEYPOINT_SITES.index("th_tip")])
    assert torch.equal(h[:, 8], sites[:, ALLEGRO_KEYPOINT_SITES.index("ff_tip")])
    # thumb, index, middle, ring: four distinct fingers
    tips = h[:, [4, 8, 12, 16]]
    assert (torch.cdist(tips, tips) + torch.eye(4) > 1e-3).all()


def test_any_leading_batch_shape(fk, configs):
    q = torch.tensor(configs[:24])
    flat = fk.sites(q)
    assert fk.sites(q.reshape(2, 3, 4, 23)).shape == (2, 3, 4, 17, 3)
    assert torch.allclose(fk.sites(q.reshape(2, 3, 4, 23)).reshape(24, 17, 3), flat, atol=1e-12)
    assert fk.sites(q[0]).shape == (17, 3)
    assert torch.allclose(fk.sites(q[0]), flat[0], atol=1e-12)
    assert fk.hand21(q.reshape(4, 6, 23)).shape == (4, 6, 21, 3)
    pos, rot = fk.frames(q.reshape(6, 4, 23), [PALM_CENTER])
    assert pos.shape == (6, 4, 1, 3) and rot.shape == (6, 4, 1, 3, 3)
    assert fk.sites(torch.zeros(0, 23)).shape == (0, 17, 3)
    assert fk.sites(configs[:3].tolist()).shape == (3, 17, 3)  # plain lists / arrays are accepted


def test_float32_and_float64_agree_and_follow_the_input(fk, configs):
    q64 = torch.tensor(configs[:64])
    p64, p32 = fk.sites(q64), fk.sites(q64.float())
    assert p64.dtype == torch.float64 and p32.dtype == torch.float32
    assert (p64 - p32.double()).abs().max() < 1e-5
    assert fk.sites(torch.zeros(2, 23, dtype=torch.int64)).dtype == fk.dtype  # integers: the module's dtype


def test_to_dtype_and_device_moves_the_constants(model, configs):
    m = PandaAllegroFK.from_mujoco(model)
    assert m.dtype == torch.float64 and m.device.type == "cpu"
    q = torch.tensor(configs[:8])
    ref = m.sites(q)
    m.float()
    assert m.dtype == torch.float32
    assert (m.sites(q) - ref).abs().max() < 1e-5  # float32 constants, float64 input: still close
    assert m.sites(torch.zeros(1, 23, dtype=torch.int32)).dtype == torch.float32
    m.to(torch.float64)
    assert m.to("cpu") is m


def test_chunked_cpu_evaluation_is_the_same(model, configs):
    whole = PandaAllegroFK(ChainSpec.from_mujoco(model), FKConfig(cpu_chunk=0))
    pieces = PandaAllegroFK(whole.spec, FKConfig(cpu_chunk=16))
    assert PandaAllegroFK(whole.spec).cpu_chunk > 0  # config/kinematics.yaml
    q = torch.tensor(configs[:50])
    assert torch.allclose(whole.sites(q), pieces.sites(q), atol=1e-12)
    p0, r0 = whole.frames(q.reshape(5, 10, 23), [PALM_CENTER, FLANGE])
    p1, r1 = pieces.frames(q.reshape(5, 10, 23), [PALM_CENTER, FLANGE])
    assert torch.allclose(p0, p1, atol=1e-12) and torch.allclose(r0, r1, atol=1e-12)
    grads = []
    for m in (whole, pieces):
        qg = q.clone().requires_grad_(True)
        m.hand21(qg).square().sum().backward()
        grads.append(qg.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-10)
    with pytest.raises(ValueError, match="cpu_chunk"):
        PandaAllegroFK(whole.spec, FKConfig(cpu_chunk=-1))


def test_differentiable(fk, configs):
    q = torch.tensor(configs[:2], requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fk.sites(x), (q,), eps=1e-6, atol=1e-6, fast_mode=True)
    pos, rot = fk.frames(q, [PALM_CENTER])
    (pos.sum() + rot.sum()).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    # the first joint turns everything about the vertical: the palm's height does not depend on it
    q2 = torch.tensor(configs[:1], requires_grad=True)
    fk.positions(q2, [PALM_CENTER])[..., 2].sum().backward()
    assert abs(float(q2.grad[0, 0])) < 1e-9 and float(q2.grad[0, 1:7].abs().max()) > 1e-3


# ------------------------------------------------------------------------------------------ save / load
def test_save_load_round_trip_is_identical(fk, configs, tmp_path):
    path = fk.save(tmp_path / "chain.json")
    assert path.stat().st_size < 100_000
    data = json.loads(path.read_text())
    assert data["format"] == "dexwm-kinematic-chain" and data["joint_names"] == list(ROBOT_JOINTS)
    loaded = PandaAllegroFK.load(path)
    assert isinstance(loaded, PandaAllegroFK)
    q = torch.tensor(configs)
    assert torch.equal(loaded.sites(q), fk.sites(q))
    assert torch.equal(loaded.frames(q, [PALM_CENTER, FLANGE])[1], fk.frames(q, [PALM_CENTER, FLANGE])[1])
    assert torch.equal(loaded.sites(q.float()), fk.sites(q.float()))


def test_loaded_chain_runs_without_mujoco(fk, configs, tmp_path):
    path = fk.save(tmp_path / "chain.json")
    q = configs[:4]
    np.save(tmp_path / "q.npy", q)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["mujoco"] = None  # any import of MuJoCo now fails
        import numpy as np, torch
        from dexwm_model.kinematics.panda_allegro import PandaAllegroFK
        fk = PandaAllegroFK.load({str(path)!r})
        out = fk.hand21(torch.tensor(np.load({str(tmp_path / "q.npy")!r})))
        np.save({str(tmp_path / "out.npy")!r}, out.numpy())
        assert "dexwm_robot.scene" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    got = np.load(tmp_path / "out.npy")
    assert np.array_equal(got, fk.hand21(torch.tensor(q)).numpy())


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        PandaAllegroFK.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PandaAllegroFK.load(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a kinematic chain file"):
        PandaAllegroFK.load(bad)


def test_spec_rejects_inconsistent_descriptions(fk):
    data = fk.spec.to_dict()
    data["bodies"][3]["parent"] = 5  # a child before its parent
    with pytest.raises(ValueError, match="topological order"):
        ChainSpec.from_dict(data)
    data = fk.spec.to_dict()
    data["bodies"][2]["joints"][0]["axis"] = [0, 0, 0]
    with pytest.raises(ValueError, match="axis must be non-zero"):
        ChainSpec.from_dict(data)
    data = fk.spec.to_dict()
    data["sites"] = [s for s in data["sites"] if s["name"] != "allegro/th_tip"]
    with pytest.raises(ValueError, match="th_tip"):
        PandaAllegroFK(ChainSpec.from_dict(data))


# ------------------------------------------------------------------------------------------ bad input
def test_wrong_last_dimension(fk):
    with pytest.raises(ValueError, match=r"23 joint values.*\(4, 22\)"):
        fk.sites(torch.zeros(4, 22))
    with pytest.raises(ValueError, match="23 joint values"):
        fk.hand21(torch.zeros(23, 2))
    with pytest.raises(ValueError, match="23 joint values"):
        fk.sites(torch.tensor(1.0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input(fk, bad):
    q = torch.zeros(5, 23)
    q[3, 9] = bad
    with pytest.raises(ValueError, match=r"finite.*allegro/ffj2"):
        fk.sites(q)
    q = torch.full((2, 23), 3e38)  # finite, but their float32 sum overflows: must still be accepted
    assert torch.isfinite(fk.sites(q)).all()


def test_unknown_frame_and_empty_names(fk):
    with pytest.raises(ValueError, match="'allegro/nope' is neither a site nor a body"):
        fk.frames(torch.zeros(23), ["allegro/nope"])
    with pytest.raises(ValueError, match="at least one"):
        fk.frames(torch.zeros(23), [])
    with pytest.raises(ValueError, match="real joint values"):
        fk.sites(torch.zeros(23, dtype=torch.complex64))


# ------------------------------------------------------------------------------------------ camera
def test_projection_matches_the_sim_camera(model, fk, configs):
    _, cam_cfg = load_sim_config()
    data = mujoco.MjData(model)
    data.qpos[_qpos_adr(model)] = configs[0]
    mujoco.mj_forward(model, data)
    cam = camera_model(model, data, cam_cfg.name, cam_cfg.width, cam_cfg.height)
    pts = fk.sites(torch.tensor(configs)).reshape(-1, 3).numpy()
    behind = cam.t_wc - 0.3 * cam.R_wc[:, 2] + np.random.default_rng(1).normal(0, 0.05, (20, 3))
    world = np.concatenate([pts, behind, cam.t_wc[None]])  # the camera centre itself: depth 0
    pc = world_to_camera(torch.tensor(world), torch.tensor(cam.R_wc), torch.tensor(cam.t_wc))
    np.testing.assert_allclose(pc.numpy(), cam.world_to_camera(world), atol=1e-12)
    uv = project(pc, torch.tensor(cam.K)).numpy()
    want = cam.project(cam.world_to_camera(world))
    assert uv.shape == (len(world), 2)
    assert np.array_equal(np.isnan(uv), np.isnan(want))
    assert np.isnan(uv[len(pts):]).all() and not np.isnan(uv[: len(pts)]).all()
    np.testing.assert_allclose(uv, want, atol=1e-9, equal_nan=True)
    # float32 and batched cameras
    uv32 = project(world_to_camera(torch.tensor(world, dtype=torch.float32), cam.R_wc, cam.t_wc), cam.K)
    assert uv32.dtype == torch.float32
    np.testing.assert_allclose(uv32.numpy(), want, rtol=1e-3, atol=1e-2, equal_nan=True)
    R2 = torch.tensor(np.stack([cam.R_wc, cam.R_wc]))
    t2 = torch.tensor(np.stack([cam.t_wc, cam.t_wc]))[:, None]
    pc2 = world_to_camera(torch.tensor(world).expand(2, -1, -1), R2, t2)
    np.testing.assert_allclose(project(pc2, torch.tensor(np.stack([cam.K, cam.K]))).numpy()[1], want,
                               atol=1e-9, equal_nan=True)


def test_projection_gradients_are_finite_in_front_and_inputs_checked():
    p = torch.tensor([[0.1, -0.2, 1.5], [0.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    K = torch.tensor([[200.0, 0, 112], [0, 200.0, 112], [0, 0, 1]], dtype=torch.float64)
    uv = project(p, K)
    assert torch.isnan(uv[1]).all()
    uv[0].sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match="points_cam"):
        project(torch.zeros(4, 2), K)
    with pytest.raises(ValueError, match="K"):
        project(torch.zeros(4, 3), torch.eye(2))
    with pytest.raises(ValueError, match="R_wc"):
        world_to_camera(torch.zeros(4, 3), torch.eye(4), torch.zeros(3))
    with pytest.raises(ValueError, match="points"):
        world_to_camera(torch.zeros(4, 2), torch.eye(3), torch.zeros(3))


# ------------------------------------------------------------------------- the generic chain reader
_GENERIC_XML = """
<mujoco>
  <worldbody>
    <body name="base" pos="0.1 0.2 0.3" quat="0.9 0.1 0.2 0.3">
      <joint name="slide0" type="slide" axis="1 1 0" ref="0.05"/>
      <geom size="0.02"/>
      <body name="a" pos="0 0 0.2" euler="10 20 30">
        <joint name="h1" axis="0 1 0" pos="0.03 0 0.01" ref="0.3"/>
        <joint name="h2" axis="1 0 1" pos="0 0.02 0"/>
        <geom size="0.02"/>
        <site name="sa" pos="0.01 0.02 0.03" euler="5 6 7"/>
        <body name="b1" pos="0.1 0 0">
          <joint name="h3" axis="0 0 1"/>
          <geom size="0.02"/>
          <body name="b1fixed" pos="0 0.05 0" euler="30 0 45"><site name="s1" pos="0.02 0 0"/></body>
        </body>
        <body name="b2" pos="-0.1 0 0">
          <joint name="h4" axis="0 1 0" pos="0 0 0.02"/>
          <geom size="0.02"/>
          <site name="s2" pos="0 0 0.04"/>
          <body name="c2" pos="0 0 0.1">
            <joint name="h5" axis="1 0 0"/>
            <geom size="0.02"/>
            <site name="s3" pos="0.01 0 0" euler="0 90 0"/>
          </body>
        </body>
      </body>
    </body>
    <body name="loose" pos="1 0 0"><freejoint/><geom size="0.1"/><site name="loose_site"/></body>
  </worldbody>
  <actuator>
    <position joint="h2"/><position joint="h1"/><position joint="slide0"/><position joint="h5"/>
    <position joint="h4"/><position joint="h3"/>
  </actuator>
</mujoco>
"""


def test_generic_chain_with_slides_anchors_refs_and_branches():
    m = mujoco.MjModel.from_xml_string(_GENERIC_XML)
    d = mujoco.MjData(m)
    chain = KinematicChain(ChainSpec.from_mujoco(m))
    assert chain.joint_names == ("h2", "h1", "slide0", "h5", "h4", "h3")
    assert "loose_site" not in chain.site_names and "loose" not in chain.body_names
    assert {mode for (_, _, mode) in chain._blocks} >= {"single", "gather"}
    q = np.random.default_rng(3).uniform(-1.5, 1.5, size=(40, m.nu))
    names = ["sa", "s1", "s2", "s3"]
    bodies = ["base", "a", "b1", "b1fixed", "b2", "c2"]
    pos, rot = chain.frames(torch.tensor(q), names + ["body:" + b for b in bodies])
    adr = _qpos_adr(m)
    for i in range(len(q)):
        d.qpos[adr] = q[i]
        mujoco.mj_kinematics(m, d)
        want_p = np.concatenate([d.site_xpos[[m.site(n).id for n in names]], d.xpos[[m.body(b).id for b in bodies]]])
        want_r = np.concatenate([d.site_xmat[[m.site(n).id for n in names]],
                                 d.xmat[[m.body(b).id for b in bodies]]]).reshape(-1, 3, 3)
        assert np.abs(pos[i].numpy() - want_p).max() < 1e-12
        assert np.abs(rot[i].numpy() - want_r).max() < 1e-12

    # only the bodies on the path to the asked-for sites
    sub = KinematicChain(ChainSpec.from_mujoco(m, sites=["s1"]))
    assert set(sub.body_names) == {"base", "a", "b1", "b1fixed"} and sub.site_names == ("s1",)
    assert torch.allclose(sub.positions(torch.tensor(q), ["s1"]), pos[:, 1:2], atol=1e-12)
    with pytest.raises(ValueError, match="'nope' is not in the model"):
        ChainSpec.from_mujoco(m, sites=["nope"])


def test_panda_allegro_reader_rejects_another_robot():
    with pytest.raises(ValueError, match="is not the project's joint order"):
        PandaAllegroFK.from_mujoco(mujoco.MjModel.from_xml_string(_GENERIC_XML))


def test_generic_reader_rejects_unactuated_joints():
    xml = _GENERIC_XML.replace('<position joint="h3"/>', "")
    with pytest.raises(ValueError, match="h3 on body b1 is not driven by an actuator"):
        ChainSpec.from_mujoco(mujoco.MjModel.from_xml_string(xml))
