"""Concurrent use of com.im2win::Conv: several sessions and several Python threads calling run at
once, with 1 and 2 intra-op threads, give exactly (bitwise) the results of a serial run."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers import DOMAIN, ISAS, conv_model, make_session, random_conv_inputs

RUNS_PER_THREAD = 10
PYTHON_THREADS = 4


def _problems():
    """Three single-Conv models covering constant weights, run-time weights + residual, and 1-D."""
    rng = np.random.default_rng(0)
    x2, w2, b2 = random_conv_inputs(rng, (2, 16, 24, 24), (24, 16, 3, 3))
    xg, wg, bg = random_conv_inputs(rng, (1, 12, 20, 22), (18, 4, 3, 3))
    x1, w1, b1 = random_conv_inputs(rng, (3, 8, 200), (10, 8, 5))
    grouped_attrs = {"group": 3, "strides": [2, 1], "pads": [1, 1, 1, 1], "activation": "LeakyRelu"}
    z = rng.standard_normal((1, 18, 10, 22)).astype(np.float32)
    return {
        "const_w": (conv_model(x2.shape, w2, b2, DOMAIN, pads=[1, 1, 1, 1], activation="Relu"), {}, x2.shape),
        "runtime_w_residual": (conv_model(xg.shape, wg, bg, DOMAIN, w_as_input=True, with_z=True, **grouped_attrs),
                               {"W": wg, "B": bg, "Z": z}, xg.shape),
        "conv1d": (conv_model(x1.shape, w1, b1, DOMAIN, dilations=[2], auto_pad="SAME_UPPER"), {}, x1.shape),
    }


PROBLEMS = _problems()


def _inputs(name: str, count: int) -> list[dict]:
    """count different feeds for one problem."""
    _, fixed, x_shape = PROBLEMS[name]
    rng = np.random.default_rng(len(name))
    return [{"X": rng.standard_normal(x_shape).astype(np.float32), **fixed} for _ in range(count)]


def _serial(name: str, feeds: list[dict]) -> list[np.ndarray]:
    sess = make_session(PROBLEMS[name][0], threads=1)
    return [sess.run(None, f)[0] for f in feeds]


def _run_all(sess, feeds: list[dict]) -> list[np.ndarray]:
    return [sess.run(None, f)[0] for f in feeds]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", PROBLEMS)
def test_python_threads_share_one_session(name, threads):
    feeds = _inputs(name, PYTHON_THREADS * RUNS_PER_THREAD)
    want = _serial(name, feeds)
    sess = make_session(PROBLEMS[name][0], threads=threads)
    chunks = [feeds[i::PYTHON_THREADS] for i in range(PYTHON_THREADS)]
    with ThreadPoolExecutor(PYTHON_THREADS) as pool:
        results = list(pool.map(lambda chunk: _run_all(sess, chunk), chunks))
    for i, got in enumerate(results):
        for g, w in zip(got, want[i::PYTHON_THREADS]):
            np.testing.assert_array_equal(g, w)


def test_many_sessions_run_concurrently():
    """Every problem with 1 and 2 intra-op threads, each in its own session, all running at once."""
    jobs = [(name, threads) for name in PROBLEMS for threads in (1, 2)]
    feeds = {name: _inputs(name, RUNS_PER_THREAD) for name in PROBLEMS}
    want = {name: _serial(name, feeds[name]) for name in PROBLEMS}
    sessions = [make_session(PROBLEMS[name][0], threads=threads) for name, threads in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda i: _run_all(sessions[i], feeds[jobs[i][0]]), range(len(jobs))))
    for (name, _), got in zip(jobs, results):
        for g, w in zip(got, want[name]):
            np.testing.assert_array_equal(g, w)


def test_sessions_created_and_run_concurrently():
    """Registering the library and creating sessions from several threads at once is safe."""
    name = "runtime_w_residual"
    feeds = _inputs(name, 2)
    want = _serial(name, feeds)

    def create_and_run(threads):
        return _run_all(make_session(PROBLEMS[name][0], threads=threads), feeds)

    with ThreadPoolExecutor(6) as pool:
        for got in pool.map(create_and_run, [1, 2, 1, 2, 1, 2]):
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)


def test_sessions_on_different_isas_run_concurrently(monkeypatch):
    """Sessions whose kernels were created under different IM2WIN_ISA values run side by side, each
    matching its own serial result."""
    name = "const_w"
    feeds = _inputs(name, RUNS_PER_THREAD)
    sessions, want = {}, {}
    for isa in ISAS:
        monkeypatch.setenv("IM2WIN_ISA", isa)
        want[isa] = _serial(name, feeds)
        sessions[isa] = make_session(PROBLEMS[name][0], threads=2)
    monkeypatch.delenv("IM2WIN_ISA")
    with ThreadPoolExecutor(len(ISAS)) as pool:
        results = dict(zip(ISAS, pool.map(lambda isa: _run_all(sessions[isa], feeds), ISAS)))
    for isa in ISAS:
        for g, w in zip(results[isa], want[isa]):
            np.testing.assert_array_equal(g, w)
