"""The CDiT predictor against an explicit reference implementation, its context cache and rollouts."""

import dataclasses
import math

import pytest
import torch

from dexwm_model.config import ConfigError
from dexwm_model.predictor import (
    CDiTPredictor,
    ContextCache,
    build_predictor,
    count_parameters,
    load_predictor_config,
)
from dexwm_model.predictor.layers import SelfAttention, attend

D_IN = 24
GRID = (3, 4)
P = GRID[0] * GRID[1]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is faster and immune to other processes crowding the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed=0, input_dim=D_IN, dtype=torch.float64, randomize=True, **overrides):
    torch.manual_seed(seed)
    cfg = load_predictor_config("tiny", **overrides)
    model = CDiTPredictor(cfg, input_dim=input_dim, grid=GRID).to(dtype)
    if randomize:  # the zero-initialised gates would hide every sub-layer: give all parameters random values
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                std = 1.0 / math.sqrt(p.shape[-1]) if p.dim() == 2 else 0.1
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)
    return model.eval()


def make_inputs(b=3, c=6, seed=0, dtype=torch.float64, input_dim=D_IN, t0=1000.0):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(b, c, P, input_dim, generator=g, dtype=torch.float64).to(dtype)
    gaps = 0.05 + 0.6 * torch.rand(b, c, generator=g, dtype=torch.float64)  # irregular sampling
    times = t0 + torch.cumsum(gaps, dim=1)
    action = (0.05 * torch.randn(b, 132, generator=g, dtype=torch.float64)).to(dtype)
    dt = 0.1 + 0.3 * torch.rand(b, generator=g, dtype=torch.float64)
    return context, times, action, dt


# ----------------------------------------------------------------------------------------------------------------
# explicit reference implementation (softmax(QK^T / sqrt(d)) V, complex-number rotations, hand-written norms)


def ref_linear(x, m):
    return x @ m.weight.T + m.bias


def ref_layer_norm(x, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def ref_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def ref_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def ref_freqs(n, lo, hi):
    if n == 1:
        return torch.tensor([2 * math.pi / hi], dtype=torch.float64)
    return torch.tensor([2 * math.pi / (hi * (lo / hi) ** (i / (n - 1))) for i in range(n)], dtype=torch.float64)


def ref_rotate(x, angles):
    n = angles.shape[-1]
    z = torch.complex(x[..., :n], x[..., n : 2 * n]) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag, x[..., 2 * n :].expand(*z.shape[:-1], -1)], dim=-1)


def heads(x, h):  # (..., L, D) -> (..., H, L, dh)
    return x.reshape(*x.shape[:-1], h, x.shape[-1] // h).transpose(-2, -3)


def ref_forward(model, context, times, action, dt, mask=None):
    cfg = model.cfg
    b, c, p, d = context.shape
    h, width = cfg.heads, cfg.width
    dh, eps = width // h, cfg.layer_norm_eps
    if mask is None:
        mask = torch.ones(b, c, dtype=torch.bool)
    context = torch.where(mask[:, :, None, None], context, torch.zeros(()))

    def embed(t):
        return (ref_linear(t, model.in_proj) if d != width else t) + model.pos_embed

    ctx = ref_layer_norm(embed(context), eps)
    last = context[:, -1]
    x = embed(last)
    w_dt = ref_freqs(cfg.time_features // 2, cfg.time_min_period, cfg.time_max_period)
    feats = torch.cat([torch.sin(dt[:, None] * w_dt), torch.cos(dt[:, None] * w_dt)], dim=-1)
    ae, de = model.action_embed, model.dt_embed
    a_emb = ref_linear(torch.nn.functional.silu(ref_linear(action, ae[0])), ae[2])
    t_emb = ref_linear(torch.nn.functional.silu(ref_linear(feats, de[0])), de[2])
    cond = torch.nn.functional.silu(a_emb + t_emb)
    n_pairs = int(dh * cfg.rope_fraction) // 2
    w_r = ref_freqs(n_pairs, cfg.time_min_period, cfg.time_max_period)
    t_k = times - times[:, -1:]  # context time relative to the newest frame; target at +dt
    key_mask = mask[:, :, None].expand(b, c, p).reshape(b, 1, 1, c * p)
    for blk in model.blocks:
        m = ref_linear(cond, blk.modulation)[:, None, :].split(width, dim=-1)
        hs = ref_layer_norm(x, eps) * (1 + m[1]) + m[0]
        qkv = ref_linear(hs, blk.self_attn.qkv)
        q, k, v = (heads(qkv[..., i * width : (i + 1) * width], h) for i in range(3))
        sa = ref_attention(q, k, v).transpose(1, 2).reshape(b, p, width)
        x = x + m[2] * ref_linear(sa, blk.self_attn.proj)
        hc = ref_layer_norm(x, eps) * (1 + m[4]) + m[3]
        q = ref_rotate(heads(ref_linear(hc, blk.q), h), (dt[:, None] * w_r)[:, None, None, :])
        kv = ref_linear(ctx, blk.kv)  # (B, C, P, 2D)
        k = ref_rotate(heads(kv[..., :width], h), (t_k[..., None] * w_r)[:, :, None, None, :])  # (B, C, H, P, dh)
        v = heads(kv[..., width:], h)
        k = k.transpose(1, 2).reshape(b, h, c * p, dh)
        v = v.transpose(1, 2).reshape(b, h, c * p, dh)
        ca = ref_attention(q, k, v, key_mask).transpose(1, 2).reshape(b, p, width)
        x = x + m[5] * ref_linear(ca, blk.cross_proj)
        hm = ref_layer_norm(x, eps) * (1 + m[7]) + m[6]
        x = x + m[8] * ref_linear(ref_gelu(ref_linear(hm, blk.mlp.fc1)), blk.mlp.fc2)
    shift, scale = ref_linear(cond, model.final_modulation)[:, None, :].split(width, dim=-1)
    return last + ref_linear(ref_layer_norm(x, eps) * (1 + scale) + shift, model.out_proj)


# ----------------------------------------------------------------------------------------------------------------


def test_config_presets_and_errors():
    cfg = load_predictor_config("S")
    assert (cfg.depth, cfg.width, cfg.heads, cfg.mlp_ratio, cfg.max_context) == (12, 384, 6, 2.0, 8)
    with pytest.raises(ConfigError, match="predictor size 'XXL' is not one of"):
        load_predictor_config("XXL")
    with pytest.raises(ConfigError, match="width 64 is not divisible by heads 5"):
        load_predictor_config("tiny", heads=5)
    model = build_predictor(D_IN, GRID, "tiny", grad_checkpoint=True)
    assert model.cfg.size == "tiny" and model.grad_checkpoint and model.num_tokens == P
    with pytest.raises(ValueError, match="grid must be two positive integers"):
        build_predictor(D_IN, (3, 0), "tiny")


PAPER_PARAMS_M = {"S": 31, "B": 104, "L": 344, "XL": 456}


@pytest.mark.parametrize("size", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_the_paper(size):
    cfg = load_predictor_config(size)
    with torch.device("meta"):  # no memory, no initialisation cost
        model = CDiTPredictor(cfg, input_dim=1024, grid=(16, 28))
    n = count_parameters(model) / 1e6
    print(f"predictor {size}: {n:.1f}M parameters (paper {PAPER_PARAMS_M[size]}M)")
    assert abs(n - PAPER_PARAMS_M[size]) / PAPER_PARAMS_M[size] < 0.15


def test_self_attention_and_attend_match_explicit_softmax():
    torch.manual_seed(0)
    sa = SelfAttention(32, 4).double()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    qkv = ref_linear(x, sa.qkv)
    q, k, v = (heads(qkv[..., i * 32 : (i + 1) * 32], 4) for i in range(3))
    expected = ref_linear(ref_attention(q, k, v).transpose(1, 2).reshape(2, 7, 32), sa.proj)
    torch.testing.assert_close(sa(x), expected, rtol=0, atol=1e-5)

    q = torch.randn(3, 4, 5, 8, dtype=torch.float64)
    k = torch.randn(3, 4, 11, 8, dtype=torch.float64)
    v = torch.randn(3, 4, 11, 8, dtype=torch.float64)
    mask = torch.rand(3, 1, 1, 11) > 0.4
    mask[..., 0] = True
    torch.testing.assert_close(attend(q, k, v, mask), ref_attention(q, k, v, mask), rtol=0, atol=1e-5)
    # keys/values shared by the whole batch (batch 1): the folded path equals per-sample attention
    out = attend(q, k[:1], v[:1], mask[:1])
    torch.testing.assert_close(
        out, ref_attention(q, k[:1].expand(3, -1, -1, -1), v[:1].expand(3, -1, -1, -1), mask[:1]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("input_dim", [D_IN, 64])  # with and without an input projection (tiny width is 64)
def test_forward_matches_reference_with_key_padding_mask(input_dim):
    model = make_model(input_dim=input_dim)
    context, times, action, dt = make_inputs(input_dim=input_dim)
    mask = torch.tensor([[True] * 6, [False, False, True, True, True, True], [False, True, False, True, False, True]])
    with torch.no_grad():
        out = model(context, times, action, dt, mask=mask)
        expected = ref_forward(model, context, times, action, dt, mask)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            model(context, times, action, dt), ref_forward(model, context, times, action, dt), rtol=0, atol=1e-5
        )
    assert out.shape == (3, P, input_dim)


def test_masked_frames_have_exactly_no_influence():
    model = make_model(dtype=torch.float32)
    context, times, action, dt = make_inputs(dtype=torch.float32)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[:, :2] = False
    mask[1, 3] = False
    with torch.no_grad():
        out = model(context, times, action, dt, mask=mask)
        other = context.clone()
        other[~mask] = 100 * torch.randn_like(other[~mask])
        other_times = times.clone()
        other_times[:, :2] -= 3.0  # different (still ordered) timestamps for the padding frames
        torch.testing.assert_close(model(other, other_times, action, dt, mask=mask), out, rtol=0, atol=0)
        # front padding is the same as leaving those frames out
        short = model(context[:, 2:], times[:, 2:], action, dt, mask=mask[:, 2:])
        torch.testing.assert_close(short, out, rtol=0, atol=1e-5)
        # and the mask matters: unmasking changes the prediction
        assert (model(context, times, action, dt) - out).abs().max() > 1e-3


def test_untrained_predictor_returns_the_newest_frame():
    model = make_model(randomize=False, dtype=torch.float32)
    context, times, action, dt = make_inputs(dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(context, times, action, dt), context[:, -1])


def test_prediction_depends_on_relative_time_only():
    model = make_model()
    context, times, action, dt = make_inputs()
    with torch.no_grad():
        out = model(context, times, action, dt)
        shifted = model(context, times + 12345.678, action, dt)  # same relative timing
        torch.testing.assert_close(shifted, out, rtol=0, atol=1e-8)
        assert (model(context, times, action, dt + 0.3) - out).abs().max() > 1e-4
        spread = times.clone()
        spread[:, :-1] -= 0.5
        assert (model(context, spread, action, dt) - out).abs().max() > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_predict_equals_forward(dtype):
    model = make_model(dtype=dtype)
    context, times, action, dt = make_inputs(dtype=dtype)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        cache = model.encode_context(context, times, mask)
        assert isinstance(cache, ContextCache) and cache.num_frames == 6 and cache.batch == 3
        out = model.predict(cache, context[:, -1], action, dt)
        torch.testing.assert_close(out, model(context, times, action, dt, mask=mask), rtol=0, atol=1e-5)


def test_expanded_cache_is_shared_and_equals_per_sample_forward():
    model = make_model(dtype=torch.float32)
    context, times, _, _ = make_inputs(b=1, dtype=torch.float32)
    n = 5
    g = torch.Generator().manual_seed(7)
    actions = 0.05 * torch.randn(n, 132, generator=g)
    with torch.no_grad():
        cache = model.encode_context(context, times)
        wide = cache.expand(n)
        assert wide.batch == n and wide.k_shared is cache.k_shared  # broadcast, nothing copied
        out = model.predict(wide, context[:, -1], actions, 0.2)
        expected = model(context.expand(n, -1, -1, -1), times.expand(n, -1), actions, 0.2)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        # a batch-1 cache is broadcast implicitly as well
        torch.testing.assert_close(model.predict(cache, context[:, -1], actions, 0.2), out, rtol=0, atol=0)
        with pytest.raises(ValueError, match="only a cache of batch 1 can be expanded"):
            wide.expand(2 * n)


def reference_rollout(model, context, times, mask, actions, dts):
    frames = list(context.unbind(1))
    stamps = list(times.unbind(1))
    valid = list(mask.unbind(1))
    outs = []
    w = model.cfg.max_context
    for t in range(actions.shape[1]):
        pred = model(
            torch.stack(frames[-w:], 1),
            torch.stack(stamps[-w:], 1),
            actions[:, t],
            dts[:, t],
            mask=torch.stack(valid[-w:], 1),
        )
        outs.append(pred)
        frames.append(pred)
        stamps.append(stamps[-1] + dts[:, t])
        valid.append(torch.ones_like(valid[-1]))
    return torch.stack(outs, 1)


def test_rollout_keeps_the_newest_eight_frames():
    model = make_model()
    context, times, _, _ = make_inputs(b=2, c=5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, :2] = False
    g = torch.Generator().manual_seed(3)
    steps = 6  # 5 context frames + 5 appended predictions > 8: the window slides
    actions = 0.05 * torch.randn(2, steps, 132, generator=g, dtype=torch.float64)
    dts = 0.1 + 0.3 * torch.rand(2, steps, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model.rollout(context, times, actions, dts, mask=mask)
        assert out.shape == (2, steps, P, D_IN)
        torch.testing.assert_close(out, reference_rollout(model, context, times, mask, actions, dts), rtol=0, atol=1e-5)
        # a window that never slid gives a different answer: the oldest frames really were dropped
        full = model(
            torch.cat([context, out[:, :-1]], 1)[:, -8:],
            torch.cat([times, times[:, -1:] + dts[:, :-1].cumsum(1)], 1)[:, -8:],
            actions[:, -1],
            dts[:, -1],
        )
        torch.testing.assert_close(full, out[:, -1], rtol=0, atol=1e-5)


def test_cache_append_slides_and_tracks_times():
    model = make_model()
    context, times, _, _ = make_inputs(b=1, c=6)
    with torch.no_grad():
        cache = model.encode_context(context, times)
        stamps = list(times[0])
        for i in range(4):
            t = stamps[-1] + 0.25
            cache = cache.append(context[:, i], t)
            stamps.append(t)
            assert cache.num_frames == min(6 + i + 1, 8)
        torch.testing.assert_close(cache.frame_times()[0], torch.stack(stamps[-8:]), rtol=0, atol=1e-9)
        assert cache.num_shared == 4 and cache.num_own == 4
        with pytest.raises(ValueError, match="must be later than the newest frame"):
            cache.append(context[:, 0], stamps[-1] - 0.1)


def test_expanded_rollout_equals_per_sample_rollout():
    model = make_model(dtype=torch.float32)
    context, times, _, _ = make_inputs(b=1, c=7, dtype=torch.float32)
    n, steps = 4, 4
    g = torch.Generator().manual_seed(5)
    actions = 0.05 * torch.randn(n, steps, 132, generator=g)
    for mask in (None, torch.tensor([[False, False, True, False, True, True, True]])):
        with torch.no_grad():
            cache = model.encode_context(context, times, mask).expand(n)
            out = model.rollout_from_cache(cache, context[:, -1], actions, 0.2)
            expected = model.rollout(
                context.expand(n, -1, -1, -1),
                times.expand(n, -1),
                actions,
                torch.full((steps,), 0.2),
                mask=None if mask is None else mask.expand(n, -1),
            )
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    context, times, action, dt = make_inputs(dtype=torch.float32)
    grads = []
    for flag in (False, True):
        model = make_model(dtype=torch.float32, grad_checkpoint=flag).train()
        loss = (
            model(context, times, action, dt).square().mean()
            + model.rollout(context, times, action[:, None], dt[:, None]).mean()
        )
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_runs_close_to_fp32():
    model = make_model(dtype=torch.float32)
    context, times, action, dt = make_inputs(dtype=torch.float32)
    with torch.no_grad():
        ref = model(context, times, action, dt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(context, times, action, dt)
            cached = model.predict(model.encode_context(context, times), context[:, -1], action, dt)
    for o in (out, cached):
        assert o.dtype == torch.float32 and torch.isfinite(o).all()
        rel = ((o - ref).norm() / (ref - context[:, -1]).norm()).item()
        assert rel < 0.05, rel


def test_compiles_without_graph_breaks():
    model = make_model(dtype=torch.float32)
    context, times, action, dt = make_inputs(dtype=torch.float32)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[:, 0] = False
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(
            compiled(context, times, action, dt, mask), model(context, times, action, dt, mask=mask), rtol=0, atol=1e-6
        )
        cache = model.encode_context(context, times, mask)
        predict = torch.compile(model.predict, backend="eager", fullgraph=True)
        torch.testing.assert_close(
            predict(cache, context[:, -1], action, dt),
            model.predict(cache, context[:, -1], action, dt),
            rtol=0,
            atol=1e-6,
        )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c, t, a, d, m: (c[..., :-1], t, a, d, m), r"context: expected shape \(B, C, 12, 24\)"),
        (lambda c, t, a, d, m: (c.repeat(1, 2, 1, 1), t.repeat(1, 2), a, d, m), "expected 1..8 frames, found 12"),
        (lambda c, t, a, d, m: (c, t[:, :-1], a, d, m), r"times: expected a float tensor of shape \(3, 6\)"),
        (lambda c, t, a, d, m: (c, t, a[:, :131], d, m), r"action: expected a float tensor of shape \(3, 132\)"),
        (lambda c, t, a, d, m: (c, t, a, d[:2], m), r"dt: expected a scalar or shape \(3,\)"),
        (lambda c, t, a, d, m: (c, t, a, -d, m), "dt > 0"),
        (lambda c, t, a, d, m: (c, t.flip(1), a, d, m), "ordered oldest first"),
        (lambda c, t, a, d, m: (c, t, a, d, m.int()), "mask: expected a bool tensor"),
        (
            lambda c, t, a, d, m: (c, t, a, d, torch.cat([m[:, 1:], ~m[:, :1]], 1)),
            "newest .last. context frame must be valid",
        ),
    ],
)
def test_bad_inputs_get_specific_errors(change, message):
    model = make_model()
    context, times, action, dt = make_inputs()
    mask = torch.ones(3, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        model(*change(context, times, action, dt, mask))


def test_predict_rejects_mismatched_cache():
    model, other = make_model(), make_model(seed=3)
    context, times, action, dt = make_inputs()
    cache = model.encode_context(context, times)
    with pytest.raises(ValueError, match="the cache holds batch 3 but action has batch 2"):
        model.predict(cache, context[:2, -1], action[:2], dt[:2])
    with pytest.raises(ValueError, match="encoded by a different predictor"):
        other.predict(cache, context[:, -1], action, dt)
    with pytest.raises(ValueError, match=r"last_tokens: expected shape \(batch, 12, 24\)"):
        model.predict(cache, context[:, -1, :5], action, dt)


def test_config_overrides_are_validated():
    cfg = load_predictor_config("tiny")
    with pytest.raises(ConfigError, match="rope_fraction"):
        dataclasses.replace(cfg, rope_fraction=1.5)
