"""Work cut for the pool it runs on: the same answer for every thread count (every output computed
exactly once, whatever the split), plans balanced for 1 to 16 threads, the shared panel where
items would otherwise rebuild each other's, and `im2win-ort plan`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import DOMAIN, ISAS, L2_CLASSES, PLANNING_ISAS, conv_model, make_session, reference_conv
from im2win_ort import _kernels
from im2win_ort.measure.layer_sets import LAYER_SETS

THREADS = [1, 2, 3, 5, 16]
LAYERS = {  # x shape, w shape, attributes
    "3x3_7x7_many_channels": ([1, 64, 7, 7], [128, 64, 3, 3], dict(pads=[1, 1, 1, 1])),
    "3x3_14x14_channel_tiles": ([1, 48, 14, 14], [64, 48, 3, 3], dict(pads=[1, 1, 1, 1])),
    "3x3_s2_positions": ([1, 16, 28, 28], [20, 16, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "5x5_dilated": ([1, 8, 19, 17], [12, 8, 5, 5], dict(pads=[2, 4, 2, 4], dilations=[2, 2])),
    "1x1_direct": ([1, 96, 14, 14], [64, 96, 1, 1], {}),
    "1x1_7x7_narrower_tiles_for_many_threads": ([1, 72, 7, 7], [96, 72, 1, 1], {}),
    "1x1_strided": ([1, 24, 13, 13], [40, 24, 1, 1], dict(strides=[2, 2])),
    "grouped": ([1, 32, 12, 12], [64, 8, 3, 3], dict(pads=[1, 1, 1, 1], group=4)),
    "depthwise_lanes": ([1, 64, 14, 14], [64, 1, 3, 3], dict(pads=[1, 1, 1, 1], group=64)),
    "depthwise_rows": ([1, 6, 20, 20], [6, 1, 3, 3], dict(pads=[1, 1, 1, 1], group=6)),
    "batch_3": ([3, 16, 9, 9], [32, 16, 3, 3], dict(pads=[1, 1, 1, 1])),
    "conv1d": ([1, 32, 50], [48, 32, 5], dict(pads=[2, 2])),
}


def _inputs(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    z = rng.standard_normal(reference_conv(x, w, b, **LAYERS_ATTRS.get(tuple(x_shape), {})).shape).astype(np.float32)
    return x, w, b, z


LAYERS_ATTRS = {tuple(x): a for x, _, a in LAYERS.values()}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_thread_count_gives_the_same_answer(name, isa):
    x_shape, w_shape, attrs = LAYERS[name]
    x, w, b, z = _inputs(x_shape, w_shape)
    want = reference_conv(x, w, b, z, activation="Relu", **attrs)
    first = None
    for threads in THREADS:
        y = _kernels.conv(x, w, b, z, activation="Relu", isa=isa, threads=threads, **attrs)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
        if first is None:
            first = y
        else:  # each output summed in the same order, whatever item computed it
            np.testing.assert_array_equal(y, first, err_msg=f"{threads} threads differ from 1")


@pytest.mark.parametrize("isa", PLANNING_ISAS)
def test_the_shared_panel_is_exercised(isa, l2):
    """Some layers above are cut finer than their panel budget for many threads: one panel per
    image, built once, no per-thread panel."""
    shared = []
    for name, (x_shape, w_shape, attrs) in LAYERS.items():
        kw = {k: v for k, v in attrs.items() if k in ("pads", "strides", "dilations", "group")}
        plan = _kernels.workspace_bytes(x_shape, w_shape, threads=16, isa=isa, l2_bytes=l2, **kw)
        if plan["im2win_shared"] > 0:
            shared.append(name)
            assert plan["im2win_per_thread"] == 0
        assert _kernels.workspace_bytes(x_shape, w_shape, threads=1, isa=isa, l2_bytes=l2, **kw)["im2win_shared"] == 0
    assert {"3x3_7x7_many_channels", "3x3_14x14_channel_tiles", "grouped"} <= set(shared), shared


@pytest.mark.parametrize("isa", PLANNING_ISAS)
def test_1x1_rows_cut_for_the_pool_keep_their_own_panels(isa, l2):
    """A 1x1 conv's row blocks share no window rows: cut for a pool by rows, into more blocks than its
    panel budget's where that has fewer than the pool (a 1 or 2 MiB L2: 7 blocks of 8 rows on one
    thread, 14 on two; a 512 KiB L2 takes 14 on one already), each item still copies only its own
    rows (no shared panel built in a phase of its own); a split into channel chunks, where items
    would copy the same rows, shares one."""
    x_shape, w_shape = [1, 256, 56, 56], [128, 256, 1, 1]  # resnet50.7, copied rather than read in place
    kw = dict(isa=isa, read_in_place=False, l2_bytes=l2)
    one = _kernels.workspace_bytes(x_shape, w_shape, threads=1, **kw)
    two = _kernels.workspace_bytes(x_shape, w_shape, threads=2, **kw)
    assert two["row_blocks"] >= max(2, one["row_blocks"]) and two["channel_chunks"] == 1, two
    assert two["im2win_shared"] == 0 and two["im2win_per_thread"] > 0, two
    if l2 >= 1 << 20:
        assert two["row_blocks"] > one["row_blocks"], (one, two)
    for threads in (4, 16):
        plan = _kernels.workspace_bytes(x_shape, w_shape, threads=threads, **kw)
        assert (plan["im2win_shared"] > 0) == (plan["channel_chunks"] > 1), plan
    x_shape, w_shape = [1, 256, 28, 28], [48, 256, 1, 1]  # many channels of a large plane: copied by rule
    assert not _kernels.workspace_bytes(x_shape, w_shape, threads=2, isa=isa, l2_bytes=l2)["tile"].endswith("direct")


@pytest.mark.parametrize("isa", ISAS)
def test_1x1_layers_copied_by_rule_give_the_reference_on_any_pool(isa):
    x_shape, w_shape = [1, 256, 28, 28], [48, 256, 1, 1]
    x, w, b, z = _inputs(x_shape, w_shape)
    want = reference_conv(x, w, b, z, activation="Relu")
    for threads in (1, 2, 5, 16):
        y = _kernels.conv(x, w, b, z, activation="Relu", isa=isa, threads=threads)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


LINE_CASES = [  # x shape, w shape, attributes, threads: 28 wide (quanta of 4 rows), 56 wide (2), 14 wide
    ([1, 128, 28, 28], [192, 128, 1, 1], {}, 2),
    ([1, 256, 28, 28], [64, 256, 1, 1], {}, 2),
    ([1, 32, 56, 56], [64, 32, 1, 1], {}, 4),
    ([1, 64, 56, 56], [32, 64, 3, 3], dict(pads=[1, 1, 1, 1], strides=[2, 2]), 2),
    ([1, 48, 28, 28], [64, 48, 3, 3], dict(pads=[1, 1, 1, 1]), 16),
    ([1, 80, 14, 14], [96, 80, 1, 1], {}, 4),
]


@pytest.mark.parametrize("isa", PLANNING_ISAS)
def test_pool_blocks_begin_on_a_line_of_every_output_plane(isa, l2):
    """Split for a pool, a layer without overlapping windows whose output planes are whole 64-byte
    lines cuts its rows only where a line begins in every plane (blocks of whole quanta of rows),
    so that no two threads write one line; planes of 14x14 (not whole lines) and one thread cut
    anywhere, and overlapping windows (3x3) may where the lines shared cost little beside the
    blocks' work (the next test: every output is still computed once)."""
    for x_shape, w_shape, attrs, threads in LINE_CASES:
        stride = attrs.get("strides", [1, 1])[0]
        out_h = out_w = (x_shape[2] + 2 * attrs.get("pads", [0])[0] - w_shape[2]) // stride + 1
        one = _kernels.workspace_bytes(x_shape, w_shape, threads=1, isa=isa, l2_bytes=l2, **attrs)
        plan = _kernels.workspace_bytes(x_shape, w_shape, threads=threads, isa=isa, l2_bytes=l2, **attrs)
        assert one["row_quantum"] == 1, one
        quantum = plan["row_quantum"]
        assert out_h % quantum == 0, plan
        if (out_h * out_w) % 16 == 0:
            if w_shape[2] <= stride:
                assert plan["row_blocks"] == 1 or quantum * out_w % 16 == 0, (x_shape, w_shape, plan)
            else:
                assert quantum == 1 or quantum * out_w % 16 == 0, (x_shape, w_shape, plan)
        else:
            assert quantum == 1, plan
    # The cut the rule changes: 14 + 14 rows of 28 would share a line in every plane.
    plan = _kernels.workspace_bytes([1, 128, 28, 28], [512, 128, 1, 1], threads=2, isa=isa, l2_bytes=l2)
    assert plan["row_blocks"] == 1 or plan["row_quantum"] == 4, plan


@pytest.mark.parametrize("isa", ISAS)
def test_blocks_cut_on_lines_give_the_reference(isa):
    """Every output computed once, for direct, copied (strips), window-panel and channel-tile layers
    cut on lines of Y."""
    for x_shape, w_shape, attrs, threads in LINE_CASES:
        _assert_tiles_match_reference(x_shape, w_shape, attrs, isa, tiles="", pools=(1, threads, 16))


@pytest.mark.parametrize("isa", PLANNING_ISAS)
def test_pool_splits_a_copying_layer_by_rows_before_channel_chunks(isa, l2):
    """A layer that copies its input into a window panel is split for a pool by rows where a split
    of rows is as even as one of channel chunks: chunks each read the whole panel, a block of rows
    its own rows only. A 1x1 conv reading X in place has no panel and may take chunks."""
    attrs = dict(pads=[1, 1, 1, 1], isa=isa, l2_bytes=l2)
    for x_shape, w_shape in COPYING_3X3:
        plan = _kernels.workspace_bytes(x_shape, w_shape, threads=2, **attrs)
        assert plan["channel_chunks"] == 1 and plan["row_blocks"] >= 2, plan
    # Blocks of one row of 28 would share lines of Y with two others worth a fifth of their work:
    # a large pool takes channel chunks of blocks several rows high instead.
    plan = _kernels.workspace_bytes([1, 128, 28, 28], [128, 128, 3, 3], threads=16, **attrs)
    assert plan["rows_per_block"] >= 4 and plan["balance"] >= 0.85, plan


COPYING_3X3 = (([1, 128, 28, 28], [128, 128, 3, 3]), ([1, 64, 28, 28], [64, 64, 3, 3]))


@pytest.mark.parametrize("isa", ISAS)
def test_copying_layers_split_by_rows_give_the_reference(isa):
    for x_shape, w_shape in COPYING_3X3:
        _assert_tiles_match_reference(x_shape, w_shape, dict(pads=[1, 1, 1, 1]), isa, tiles="", pools=(1, 2))


def test_ort_sessions_cut_for_their_pool_agree():
    x_shape, w_shape, attrs = LAYERS["3x3_7x7_many_channels"]
    x, w, b, _ = _inputs(x_shape, w_shape)
    model = conv_model(["N", *x_shape[1:]], w, b, DOMAIN, **attrs)
    outputs = [make_session(model, threads=t).run(None, {"X": x})[0] for t in (1, 4, 16)]
    for y in outputs[1:]:
        np.testing.assert_array_equal(y, outputs[0])
    np.testing.assert_allclose(outputs[0], reference_conv(x, w, b, **attrs), rtol=1e-4, atol=1e-4)


def _set_layers(name):
    return LAYER_SETS[name]((1,)) if name == "paper" else LAYER_SETS[name]()


@pytest.mark.parametrize("isa", PLANNING_ISAS)
@pytest.mark.parametrize("threads", [2, 4, 8, 16])
@pytest.mark.parametrize("set_name", ["paper", "resnet50", "vgg16", "mobilenetv2"])
def test_batch_1_plans_keep_every_thread_busy(set_name, threads, isa, l2):
    """At least one item per thread on every layer, and two at 16 threads (fewer threads may take one
    item each where that balances better); balance (the share of the pool's time spent working)
    >= 0.7, and >= 0.85 on the 3x3 layers and on every layer at 16 threads (the 1x1 convs on 7x7
    and 14x14 get there with narrower channel tiles)."""
    for layer in _set_layers(set_name):
        plan = _kernels.workspace_bytes(layer.x_shape, layer.w_shape, strides=[layer.stride] * 2,
                                        pads=[layer.pad] * 4, group=layer.group, threads=threads, isa=isa,
                                        l2_bytes=l2)
        items, balance = plan["work_items"], plan["balance"]
        assert items >= threads, (layer.name, plan)
        assert balance >= (0.85 if layer.kernel == 3 or threads == 16 else 0.7), (layer.name, plan)
        if threads == 16:
            assert items >= 2 * threads, (layer.name, plan)


def test_a_narrower_channel_tile_gives_a_large_pool_its_items(l2):
    """A 1x1 conv on 7x7 with 96 output channels: 3 tiles of 32 channels x 7 rows are too few items
    for 16 threads, so the plan takes tiles of 16 (AVX-512, planned on any CPU); one thread keeps
    the wide tile."""
    x_shape, w_shape = [1, 64, 7, 7], [96, 64, 1, 1]
    kw = dict(isa="avx512", tiles="channels", l2_bytes=l2)
    one = _kernels.workspace_bytes(x_shape, w_shape, threads=1, **kw)
    many = _kernels.workspace_bytes(x_shape, w_shape, threads=16, **kw)
    assert one["tile"].startswith("32x") and many["tile"].startswith("16x"), (one, many)
    assert many["work_items"] >= 32 and many["balance"] >= 0.85, many


@pytest.mark.parametrize("isa", PLANNING_ISAS)
def test_one_thread_makes_no_split_beyond_the_panel_budget(isa, l2):
    for layer in _set_layers("resnet50"):
        plan = _kernels.workspace_bytes(layer.x_shape, layer.w_shape, strides=[layer.stride] * 2,
                                        pads=[layer.pad] * 4, group=layer.group, threads=1, isa=isa, l2_bytes=l2)
        assert plan["channel_chunks"] == 1 and plan["im2win_shared"] == 0 and plan["balance"] == 1.0


# ---- im2win-ort plan ----------------------------------------------------------------------------

def _plan_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "im2win_ort", "plan", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_plan_command(tmp_path):
    import onnx

    x_shape, w_shape, attrs = LAYERS["3x3_7x7_many_channels"]
    model = conv_model(["N", *x_shape[1:]], np.ones(w_shape, np.float32), None, "", node_name="c7", **attrs)
    onnx.save(model, str(tmp_path / "m.onnx"))
    done = _plan_cli(tmp_path / "m.onnx", "--threads", 16, "--batch", 1, "--json", tmp_path / "plan.json",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "plan for 16 thread(s), batch 1" in done.stdout and "| c7 |" in done.stdout
    layer = json.loads((tmp_path / "plan.json").read_text())["layers"][0]
    want = _kernels.workspace_bytes([1, *x_shape[1:]], w_shape, threads=16, pads=attrs["pads"])
    assert {k: layer[k] for k in want} == want
    assert layer["items_per_thread"] >= 1 and layer["im2win_shared"] > 0


def test_plan_command_on_a_rewritten_model_and_its_errors(tmp_path):
    import onnx

    from im2win_ort import rewrite

    w = np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32)
    model = conv_model(["N", 8, 10, 10], w, None, "", node_name="c", pads=[1, 1, 1, 1])
    onnx.save(rewrite(model), str(tmp_path / "r.onnx"))
    done = _plan_cli(tmp_path / "r.onnx", "--threads", 4, cwd=tmp_path)
    assert done.returncode == 0 and "| c |" in done.stdout, done.stderr
    for args, message in (((tmp_path / "missing.onnx",), "missing.onnx"),
                          ((tmp_path / "r.onnx", "--threads", 0), "--threads must be between 1 and 1024")):
        bad = _plan_cli(*args, cwd=tmp_path)
        assert bad.returncode == 1 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_a_session_alternating_shapes_from_several_threads():
    """The kernel keeps the plan of the last shape: runs of other shapes, from other threads at the
    same time, each get their own."""
    from concurrent.futures import ThreadPoolExecutor

    w = np.random.default_rng(1).standard_normal((24, 8, 3, 3)).astype(np.float32) / 5
    sess = make_session(conv_model(["N", 8, "H", "W"], w, None, DOMAIN, pads=[1, 1, 1, 1]), threads=2)
    inputs = [np.random.default_rng(s).standard_normal((1 + s % 2, 8, 5 + s, 7 + 2 * s)).astype(np.float32)
              for s in range(6)]
    want = [reference_conv(x, w, pads=[1, 1, 1, 1]) for x in inputs]

    def run(i):
        return i % 6, sess.run(None, {"X": inputs[i % 6]})[0]

    with ThreadPoolExecutor(4) as pool:
        for i, y in pool.map(run, range(48)):
            np.testing.assert_allclose(y, want[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("width", [7, 10, 14, 28, 29])
def test_tail_tiles_cover_the_columns_past_the_whole_tiles(isa, width):
    """Columns past a row's whole channel tiles run as a tail tile of exactly that many columns,
    whose rows may reach past the block's (one-row blocks for 16 threads): every output once."""
    x_shape, w_shape, attrs = [1, 24, 9, width + 2], [32, 24, 3, 3], dict(pads=[0, 0, 0, 0])
    x, w, b, _ = _inputs(x_shape, w_shape)
    want = reference_conv(x, w, b, activation="Relu", **attrs)
    for threads in (1, 16):
        plan = _kernels.workspace_bytes(x_shape, w_shape, threads=threads, isa=isa, tiles="channels", **attrs)
        if plan["tile_family"] == "channels":  # "16x1x6 + 3x2": whole tiles of 6 columns, a tail of 2
            cols = int(plan["tile"].split(" ")[0].split("x")[2])
            assert (" + " in plan["tile"]) == (width > cols and width % cols != 0), plan
            if " + " in plan["tile"]:
                assert int(plan["tile"].split(" + ")[1].split("x")[1].split(" ")[0]) == width % cols, plan
        y = _kernels.conv(x, w, b, activation="Relu", isa=isa, threads=threads, tiles="channels", **attrs)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("width", [7, 13, 14, 15, 25])
def test_tails_run_even_runs_of_rows(isa, width):
    """The columns past a row's whole channel tiles (AVX2's 6-wide tiles: 1, 2 or 3 of them here)
    run the block's height as even runs of rows, each an exact tile (a one-column tail of 7 rows:
    4 + 3, not 6 + 6 with 5 dropped; a two-column one: 3 + 2 + 2, not 3 + 3 + 3): every output
    once, for any height and pool, at stride 1 and 2."""
    for height, stride in ((1, 1), (2, 1), (5, 1), (7, 1), (13, 1), (14, 1), (7, 2), (10, 2)):
        size = [(height - 1) * stride + 3, (width - 1) * stride + 3]
        x_shape, w_shape, attrs = [1, 64, *size], [32, 64, 3, 3], dict(pads=[0, 0, 0, 0], strides=[stride, stride])
        x, w, b, _ = _inputs(x_shape, w_shape)
        z = np.random.default_rng(1).standard_normal([1, 32, height, width]).astype(np.float32)
        want = reference_conv(x, w, b, z, activation="Relu", **attrs)
        for threads in (1, 3, 16):
            y = _kernels.conv(x, w, b, z, activation="Relu", isa=isa, threads=threads, tiles="channels", **attrs)
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"height {height}, stride {stride}, {threads} threads")


def _assert_tiles_match_reference(x_shape, w_shape, attrs, isa, tiles="channels", pools=(1, 3, 16)):
    """Tiles of the family with bias, a residual and Relu give the reference's outputs for each pool size."""
    x, w, b, _ = _inputs(x_shape, w_shape)
    z = np.random.default_rng(1).standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
    want = reference_conv(x, w, b, z, activation="Relu", **attrs)
    for threads in pools:
        y = _kernels.conv(x, w, b, z, activation="Relu", isa=isa, threads=threads, tiles=tiles, **attrs)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                   err_msg=f"{x_shape} {w_shape}, {threads} threads")


@pytest.mark.parametrize("isa", ISAS)
def test_1x1_channel_tiles_reduce_in_runs_of_channels(isa):
    """A 1x1 conv with many input channels runs its channel tiles over runs of them (the sums kept
    between runs, added in the same order): every output as one run would give it, for direct and
    panel inputs, groups, tails and any pool."""
    cases = [  # x shape, w shape, attributes, channels per run
        ([1, 300, 7, 7], [64, 300, 1, 1], {}, 100),
        ([1, 300, 14, 14], [32, 300, 1, 1], {}, 100),
        ([1, 250, 13, 11], [96, 250, 1, 1], dict(strides=[2, 2]), 125),
        ([2, 1040, 6, 9], [64, 520, 1, 1], dict(group=2), 104),
        ([1, 128, 7, 7], [32, 128, 1, 1], {}, 0),  # one run
    ]
    for x_shape, w_shape, attrs, run in cases:
        plan = _kernels.workspace_bytes(x_shape, w_shape, isa=isa, tiles="channels", **attrs)
        if plan["tile_family"] != "channels":
            assert plan["channel_run"] == 0, plan
            continue
        assert plan["channel_run"] == run, (x_shape, plan)
        _assert_tiles_match_reference(x_shape, w_shape, attrs, isa)
    # 3x3 tiles keep one run.
    assert _kernels.workspace_bytes([1, 512, 7, 7], [512, 512, 3, 3], pads=[1, 1, 1, 1], isa=isa)["channel_run"] == 0


@pytest.mark.parametrize("isa", ISAS)
def test_position_tiles_go_along_the_block_in_runs_of_channel_tiles(isa):
    """Position tiles run four tiles of channels at a time along a block, and a 1x1 conv's whole
    tiles store straight from their sums: every output once, with bias, residual and Relu, where
    the channels end inside a run or on a short tile, the positions on a partial vector, for X read
    in place, through a strip panel (its last strip partial) or a window panel, strided, grouped,
    batched and 3x3, on any pool."""
    cases = [  # x shape, w shape, attributes, strip panel
        ([1, 24, 30, 30], [50, 24, 1, 1], {}, False),  # 8 whole tiles and one of 2: runs of 4, 4, 1
        ([1, 256, 28, 28], [30, 256, 1, 1], {}, True),  # many channels of large planes: copied as strips
        ([2, 512, 29, 30], [20, 256, 1, 1], dict(group=2), True),  # blocks of 300, 300, 270: partial strips
        ([1, 16, 25, 25], [24, 16, 1, 1], dict(strides=[2, 2]), False),
        ([2, 32, 17, 17], [36, 16, 1, 1], dict(group=2), False),
        ([1, 20, 19, 23], [40, 20, 3, 3], dict(pads=[1, 1, 1, 1]), False),
    ]
    for x_shape, w_shape, attrs, strips in cases:
        plan = _kernels.workspace_bytes(x_shape, w_shape, isa=isa, tiles="positions", **attrs)
        assert plan["tile_family"] == "positions" and plan["strip_panel"] == strips, (x_shape, plan)
        assert plan["tile"].endswith(" strips") == strips
        _assert_tiles_match_reference(x_shape, w_shape, attrs, isa, tiles="positions")


@pytest.mark.parametrize("isa", ISAS)
def test_channel_tiles_prefetch_the_next_runs_weights(isa):
    """Channel tiles fetch the next run's (or channel block's) weights into L2 while they compute
    where two runs and the block's input fit the core's L2; prefetching changes no output: the
    reference's at W's last block (a tile of one channel block), between runs, across groups and
    for any pool."""
    cases = [  # x shape, w shape, attributes
        ([1, 300, 7, 7], [80, 300, 1, 1], {}),  # runs of 100 channels; M = 80 ends on one block
        ([1, 64, 9, 9], [48, 64, 3, 3], dict(pads=[1, 1, 1, 1])),
        ([2, 96, 8, 8], [96, 48, 3, 3], dict(pads=[1, 1, 1, 1], group=2)),
        ([1, 40, 15, 15], [72, 40, 3, 3], dict(strides=[2, 2])),
    ]
    for x_shape, w_shape, attrs in cases:
        plan = _kernels.workspace_bytes(x_shape, w_shape, isa=isa, tiles="channels", **attrs)
        if plan["tile_family"] != "channels":
            assert not plan["prefetch_weights"], plan
            continue
        assert plan["prefetch_weights"], (x_shape, plan)
        _assert_tiles_match_reference(x_shape, w_shape, attrs, isa)
    # A run of weights that cannot fit twice in any core's L2 (9 MiB of 3x3 weights a block).
    huge = _kernels.workspace_bytes([1, 8192, 3, 3], [64, 8192, 3, 3], pads=[1, 1, 1, 1], isa=isa, tiles="channels")
    assert not huge["prefetch_weights"], huge


@pytest.mark.parametrize("isa", ISAS)
def test_channel_tiles_of_every_width(isa):
    """Rows of 1 to 30 outputs, each cut into the table's channel tiles and tails (one-row tiles
    of up to 14 columns on AVX-512): every output once, as the reference gives it."""
    for width in range(1, 31):
        x_shape, w_shape, attrs = [1, 12, 5, width], [64, 12, 3, 3], dict(pads=[1, 1, 1, 1])
        rng = np.random.default_rng(width)
        x, z = (rng.standard_normal(shape).astype(np.float32) for shape in (x_shape, [1, 64, 5, width]))
        w = (rng.standard_normal(w_shape) / np.sqrt(12 * 9)).astype(np.float32)
        b = rng.standard_normal(64).astype(np.float32)
        want = reference_conv(x, w, b, z, activation="Relu", **attrs)
        for threads in (1, 3):
            y = _kernels.conv(x, w, b, z, activation="Relu", isa=isa, threads=threads, tiles="channels", **attrs)
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"width {width}, {threads} threads")


@pytest.mark.parametrize("isa", ISAS)
def test_one_row_channel_tiles_for_any_3x3_geometry(isa):
    """The one-row channel tiles of 7 to 14 outputs (AVX-512's hand-scheduled 3x3 loop) over strided,
    dilated and padded windows, a channel count that is no multiple of a vector, with bias, a
    residual and Relu: every output as the reference gives it."""
    for width, attrs in [(7, dict(pads=[1, 1, 1, 1])), (10, dict(pads=[1, 1, 1, 1])),
                         (12, dict(pads=[0, 0, 0, 0])), (13, dict(pads=[1, 1, 1, 1])),
                         (28, dict(pads=[1, 1, 1, 1], strides=[2, 2])),
                         (20, dict(pads=[2, 2, 2, 2], dilations=[2, 2])),
                         (15, dict(pads=[1, 0, 1, 2], strides=[1, 2]))]:
        _assert_tiles_match_reference([1, 40, 9, width], [64, 40, 3, 3], attrs, isa, pools=(1, 3))


@pytest.mark.parametrize("isa", ISAS)
def test_1x1_flat_rows_with_tails(isa):
    """1x1 convs walk a block's rows as one flat run, now with one-row tails (49 = 3 x 14 + 7):
    blocks of uneven heights for the pool, X read in place up to its last float, and strided."""
    for height, width, strides in ((7, 7, 1), (5, 9, 1), (9, 9, 1), (3, 17, 1), (1, 30, 1), (13, 13, 2)):
        x_shape, w_shape, attrs = [1, 40, height, width], [64, 40, 1, 1], dict(strides=[strides] * 2)
        rng = np.random.default_rng(height * 100 + width)
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) / np.sqrt(40)).astype(np.float32)
        b = rng.standard_normal(64).astype(np.float32)
        z = rng.standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
        want = reference_conv(x, w, b, z, activation="Relu", **attrs)
        for threads in (1, 2, 3, 16):
            y = _kernels.conv(x, w, b, z, activation="Relu", isa=isa, threads=threads, tiles="channels", **attrs)
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"{height}x{width} s{strides}, {threads} threads")


def test_avx512_rows_of_14_run_in_one_tile():
    """A 14-wide row (ResNet's and MobileNetV2's 14x14 layers, 1x1 ones flattened to rows of 196)
    is one 32-channel tile of 28 accumulators, not two of 14 (planned on any CPU)."""
    plan = _kernels.workspace_bytes([1, 256, 14, 14], [256, 256, 3, 3], pads=[1, 1, 1, 1], isa="avx512")
    assert plan["tile"] == "32x1x14", plan
    plan = _kernels.workspace_bytes([1, 1024, 14, 14], [256, 1024, 1, 1], isa="avx512")
    assert plan["tile"] == "32x1x14 strips", plan  # copied as strips of 14 columns (long reduction)
    plan = _kernels.workspace_bytes([1, 512, 7, 7], [512, 512, 3, 3], pads=[1, 1, 1, 1], isa="avx512")
    assert plan["tile"] == "32x1x7", plan  # 7-wide rows keep one-row tiles
    for l2 in L2_CLASSES.values():  # a 7x7 1x1's flat run of 49 (of 28 where the L2 takes 4 rows a block)
        plan = _kernels.workspace_bytes([1, 2048, 7, 7], [512, 2048, 1, 1], isa="avx512", l2_bytes=l2)
        tail = plan["rows_per_block"] * 7 % 14
        assert plan["tile"] == "32x1x14" + (f" + 1x{tail}" if tail else "") + " strips", plan


def test_avx2_seven_high_one_column_tails_run_four_and_three_rows():
    for height, run in ((7, 4), (13, 5), (6, 6)):
        plan = _kernels.workspace_bytes([1, 64, height + 2, 9], [64, 64, 3, 3], isa="avx2", tiles="channels")
        assert plan["tile"] == f"16x1x6 + {run}x1", (height, plan)


def test_avx2_rows_of_common_widths_take_tail_tiles():
    """AVX2's 6-column tiles leave tails on ResNet's and VGG's 7 to 112-wide rows."""
    for width in (7, 14, 28, 56, 112):
        plan = _kernels.workspace_bytes([1, 64, 8, width], [64, 64, 3, 3], pads=[1, 1, 1, 1], isa="avx2",
                                        tiles="channels")
        assert plan["tile"].startswith("16x1x6 + "), (width, plan)


@pytest.mark.parametrize("isa", ISAS)
def test_depthwise_rows_are_not_cut_for_balance_alone(isa):
    """Each depthwise item builds its own block's panel, the windows' overhang included: with enough
    channel blocks for the pool, the rows stay whole (cut into 7 one-row blocks at 16 threads, a
    960-channel 7x7 layer built 3 panel rows per output row)."""
    kw = dict(pads=[1, 1, 1, 1], group=960, isa=isa)
    plan = _kernels.workspace_bytes([1, 960, 7, 7], [960, 1, 3, 3], threads=16, **kw)
    assert plan["row_blocks"] == 1 and plan["work_items"] >= 32 and plan["balance"] >= 0.85, plan
    # Few channel blocks: rows are cut, just enough for two even items a thread.
    plan = _kernels.workspace_bytes([1, 32, 112, 112], [32, 1, 3, 3], threads=16, **dict(kw, group=32))
    assert 32 <= plan["work_items"] <= 40 and plan["balance"] >= 0.85, plan


@pytest.mark.parametrize("isa", ISAS)
def test_depthwise_3x3_stride2_reads_x_in_place(isa):
    """3x3 depthwise at stride 2 reads X where it lies on AVX-512 (columns split in registers, no
    workspace) and through the lanes panel elsewhere: edges of every kind (padding of 0-3 on either
    side, rows narrower than a vector and of several vectors, a single input column or row), bias,
    a residual, clamping and other activations, one image or two, 1, 3 and 16 threads."""
    rng = np.random.default_rng(7)
    cases = [(16, 15, 17, [1, 1, 1, 1]), (32, 56, 56, [1, 1, 1, 1]), (16, 7, 7, [0, 0, 0, 0]),
             (48, 9, 33, [0, 1, 1, 0]), (16, 1, 1, [1, 1, 1, 1]), (16, 2, 40, [1, 1, 0, 0]),
             (32, 64, 70, [0, 0, 1, 1]), (16, 9, 50, [2, 3, 2, 3]), (16, 5, 3, [3, 2, 1, 3])]
    for (c, h, w_, pads), activation, batch in zip(cases, ["Relu", "", "Sigmoid", "Clip", "", "Relu", "LeakyRelu",
                                                          "", "Relu"], [1, 2, 1, 1, 2, 1, 1, 2, 1]):
        attrs = dict(pads=pads, strides=[2, 2], group=c)
        params = [0.0, 6.0] if activation == "Clip" else [0.1] if activation == "LeakyRelu" else []
        x = rng.standard_normal((batch, c, h, w_)).astype(np.float32)
        w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        z = rng.standard_normal(reference_conv(x, w, b, **attrs).shape).astype(np.float32)
        want = reference_conv(x, w, b, z, activation=activation, activation_params=params, **attrs)
        plan = _kernels.workspace_bytes(list(x.shape), list(w.shape), isa=isa, **attrs)
        if isa == "avx512":
            assert plan["tile"] == "3x3 stride 2 in place" and plan["im2win_per_thread"] == 0, plan
        else:
            assert plan["tile"] != "3x3 stride 2 in place", plan
        for threads in (1, 3, 16):
            y = _kernels.conv(x, w, b, z, activation=activation, activation_params=params, isa=isa, threads=threads,
                              **attrs)
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"{c}x{h}x{w_} pads {pads} {activation}, {threads} threads")
