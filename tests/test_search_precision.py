"""Precision as a searched dimension (envs.precision): the LUT prices the INT8 graph the export
really writes, mixed policies are told apart by their marks, agents mark groups in a mixed search,
a device where INT8 is slower keeps fp32, and `hilprune export` quantizes what the search picked.

On the simulated device: its cost model prices INT8 kernels by its own constants, so nothing here
depends on this machine's speed."""

from __future__ import annotations

from dataclasses import replace

import onnx
import pytest

import hwprofiler
from envs.evaluator import PolicyEvaluator
from envs.precision import search_precision
from hilprune.data import load_dataset
from hilprune.export import to_onnx_bytes
from hilprune.quantize import TrainCalibration, fp32_nodes
from hwprofiler.bridge import FIRST_PAIRS
from hwprofiler.quantization import Quantizer, Scheme, candidate_schemes

SCHEME = candidate_schemes({})[0].name  # sim-cpu's qdq-u8s8 (-rr: 7-bit weights where this host lacks VNNI)


def sim(**options) -> hwprofiler.DeviceSpec:
    base = hwprofiler.load_device("sim-cpu")
    return replace(base, runtime_options=base.runtime_options | options)


@pytest.fixture(scope="module")
def mixed() -> PolicyEvaluator:
    return PolicyEvaluator("digits-cnn", "digits", device="sim-cpu", precision="mixed", round_to=8, proxy="bn:10")


def real_int8_export(ev: PolicyEvaluator, policy) -> bytes:
    """What `hilprune export --precision int8` quantizes: the pruned graph, calibrated on train
    images, the groups marked fp32 left in float."""
    model = ev.surgeon.apply(policy, count=False).model
    fp32 = to_onnx_bytes(model, ev.input_shape, ev.device.batch)
    reader = TrainCalibration(load_dataset("digits"), 64, ev.device.batch, onnx.load_from_string(fp32).graph.input[0].name)
    with Quantizer(fp32, reader, exclude=fp32_nodes(fp32, policy)) as q:
        return q.quantize(Scheme.parse(SCHEME))


def mixed_search(out, agents: list[str], evals: int):
    """A finished mixed-precision search of digits-cnn on sim-cpu at 0.6; returns its job."""
    from search.job import resolve_job
    from search.runner import run_search

    job = resolve_job(
        None, model="digits-cnn", dataset="digits", device="sim-cpu", budgets=["0.6"], agents=agents, evals=evals,
        precision="mixed", round_to=8, proxy="bn:10", out=str(out),
    )  # fmt: skip
    run_search(job, progress=False)
    return job


def test_the_search_quantizes_with_the_scheme_the_devices_table_found_fastest(mixed):
    table = hwprofiler.precision.precision_table(mixed.device)
    assert mixed.precision.mode == "mixed"
    assert mixed.precision.scheme.name == table["best"] == SCHEME  # sim-cpu: S8S8 MACs are 3x slower
    assert SCHEME in mixed.describe()["precision"]["why"]
    assert "the model itself" in mixed.describe()["precision"]["why"]  # timed on its own dense graph, not the reference


def test_mixed_pricing_equals_the_kernels_of_the_real_quantized_export(mixed):
    names = [g.name for g in mixed.groups]
    marks = {n: ("int8" if i % 2 == 0 else "fp32") for i, n in enumerate(names)}
    policy = mixed.policy([0.3] * len(names), marks)
    assert policy.graph_precision() == "mixed"
    assert mixed.mixed_kernel_map() is not None  # it reproduced two real mixed exports
    priced = mixed.kernels_of(policy)
    real = hwprofiler.device_kernels(real_int8_export(mixed, policy), mixed.device)
    assert priced == real
    assert {k.precision for k in priced} == {"fp32", "u8s8"}  # float and INT8 kernels side by side


def test_a_mixed_policy_is_priced_without_surgery_or_export(mixed, monkeypatch):
    names = [g.name for g in mixed.groups]
    marks = {n: ("fp32" if i % 2 == 0 else "int8") for i, n in enumerate(names)}
    assert mixed.mixed_kernel_map() is not None  # built (and checked against real exports) before surgery goes
    before = {r: mixed.kernels_of(mixed.policy([r] * len(names), marks)) for r in (0.1, 0.6)}

    def no_surgery(*a, **k):
        raise AssertionError("the mixed kernel map needs no surgery")

    monkeypatch.setattr(mixed.surgeon, "apply", no_surgery)
    for r, kernels in before.items():
        assert mixed.kernels_of(mixed.policy([r] * len(names), marks)) == kernels
    assert mixed.stats()["mixed_kernel_map"] is True


def test_the_int8_kernel_map_equals_the_kernels_of_the_real_quantized_export():
    ev = PolicyEvaluator("digits-cnn", "digits", device="sim-cpu", precision="int8", round_to=8, proxy="bn:10")
    assert ev.latency.kmap_q_ok
    policy = ev.policy([0.5, 0.2, 0.7, 0.0][: len(ev.groups)] + [0.4] * max(0, len(ev.groups) - 4))
    assert policy.graph_precision() == "int8"
    real = hwprofiler.device_kernels(real_int8_export(ev, policy), ev.device)
    assert ev.latency.kmap_q.kernels(list(policy.key())) == real
    assert ev.predict_latency(policy) < ev.latency.predict_key(policy.key()) * ev.lut_scale  # sim-cpu: INT8 pays at these widths


def test_marks_tell_policies_apart_and_an_int8_policy_is_scored_as_its_int8_graph(mixed):
    names = [g.name for g in mixed.groups]
    ratios = [0.25] * len(names)
    fp32 = mixed.evaluate(ratios, precision="fp32")
    int8 = mixed.evaluate(ratios, precision="int8")
    again = mixed.evaluate(ratios, precision="int8")
    assert fp32.policy.metrics["precision"] == "fp32" and int8.policy.metrics["precision"] == "int8"
    assert not int8.cached and again.cached  # same widths, other marks: another policy; same marks: the cache
    assert int8.lut_latency_ms != fp32.lut_latency_ms
    assert "quantize" in int8.phases and "quantize" not in fp32.phases  # accuracy of the INT8 graph, by onnxruntime
    assert int8.policy.metrics["int8_scheme"] == SCHEME
    assert mixed.evaluate(ratios).policy.graph_precision() == "int8"  # plain ratios in a mixed search: all INT8


def test_an_all_int8_policy_is_timed_against_the_dense_int8_graph_and_converted(mixed):
    """A vCPU's slow mode can slow INT8 more than fp32, so an INT8 graph's ratio to the fp32 model
    reads one mode or the other: it is paired with the dense INT8 graph and carried over by the
    conversion (hwprofiler.bridge). Mixed graphs stay paired with the fp32 model."""
    names = [g.name for g in mixed.groups]
    ratios = [0.375] * len(names)
    marks = {n: "fp32" if i == 0 else "int8" for i, n in enumerate(names)}
    before = mixed.stats().get("int8_conversion_ratios", [])
    part = mixed.evaluate(ratios, precision=marks, live=True)
    assert part.policy.graph_precision() == "mixed" and part.latency_kind == "live"
    assert mixed.stats().get("int8_conversion_ratios", []) == before  # not bridged
    r = mixed.evaluate(ratios, precision="int8", live=True)
    stats = mixed.stats()
    assert r.policy.graph_precision() == "int8" and len(stats["int8_conversion_ratios"]) >= FIRST_PAIRS
    bridge = mixed.latency.bridge()
    assert bridge.reference == mixed.latency.reference_onnx
    graph = mixed.precision.structure(
        to_onnx_bytes(mixed.surgeon.apply(r.policy, count=False).model, mixed.input_shape), r.policy
    )
    to_int8 = hwprofiler.measure_paired(graph, bridge.reference_int8, mixed.device, cache=False).ratio
    assert r.live_ratio == pytest.approx(to_int8 * stats["int8_conversion"])
    # sim-cpu's times do not wander, so the bridge lands where the direct pair does
    assert r.live_ratio == pytest.approx(hwprofiler.measure_paired(graph, bridge.reference, mixed.device, cache=False).ratio)


def test_int8_calibration_runs_are_observed_as_bridged_ratios_in_the_lut_frame(tmp_path, monkeypatch):
    """The INT8 predictor learns from ratios to the fp32 reference, carried over from the dense INT8
    graph (hwprofiler.bridge), times the reference's LUT price: the frame a search's live INT8
    measurements enter it in. Absolute times would mix a vCPU's speed modes into it."""
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))  # a new table: calibrated here
    ev = PolicyEvaluator("digits-cnn", "digits", device="sim-cpu", precision="int8", round_to=8, proxy="bn:10")
    lat = ev.latency
    scope = lat.predictor_q.scope
    assert scope.endswith("|bridged")
    own = [o for o in lat.lut.observations if o.get("scope") == scope]
    assert len(own) >= 12 and len(ev.stats()["int8_conversion_ratios"]) >= FIRST_PAIRS
    dense_q = lat.int8_structure(lat.reference_onnx)
    direct = hwprofiler.measure_paired(dense_q, lat.reference_onnx, lat.device, cache=False).ratio
    assert own[0]["live_ms"] == pytest.approx(direct * lat.dense_lut_latency_ms, rel=1e-6)  # the first run: dense


def test_a_device_where_int8_is_slower_keeps_fp32():
    slow = sim(int8_gmacs=2.0, quant_ns=5.0)
    got = search_precision("mixed", slow)
    assert got.mode == "fp32" and got.asked == "mixed" and got.scheme is None
    assert "keeps fp32" in got.why


def test_a_mixed_search_marks_groups_and_export_quantizes_what_it_picked(tmp_path):
    from search.export import export_run
    from search.store import PRECISION_PARAM, load_records, open_storage

    job = mixed_search(tmp_path / "run", ["random", "tpe"], 6)
    records = load_records(open_storage(job.storage_url), job.name)
    marks = [r.policy["groups"] for recs in records.values() for r in recs]
    assert all(any(k.startswith(PRECISION_PARAM) for k in r.grid_params) for r in records["tpe"])
    kinds = {tuple(g.get("precision", "fp32") for g in groups) for groups in marks}
    assert len(kinds) > 2  # the agents tried several fp32/int8 mixes
    res = export_run(tmp_path / "run", "0.6", tmp_path / "out", finetune_epochs=0, progress=False, precision="auto")
    picked = {
        g.get("precision", "fp32") for g in __import__("json").loads((tmp_path / "out" / "policy.json").read_text())["groups"]
    }
    if "int8" in picked:
        assert res["precision"] in ("int8", "fp32")  # quantized, unless no scheme paid on the export's own timing
        assert "quantization" in res
    else:
        assert res["precision"] == "fp32" and "quantization" not in res


def test_the_job_checks_its_precision_and_older_run_directories_read_as_fp32(tmp_path):
    from hilprune.errors import HilpruneError
    from search.job import JOB_FILE, load_run_job, resolve_job

    with pytest.raises(HilpruneError, match="--precision must be one of fp32, int8, mixed"):
        resolve_job(None, model="digits-cnn", dataset="digits", precision="int4", out=str(tmp_path / "a"))
    run = tmp_path / "old"
    run.mkdir()
    (run / JOB_FILE).write_text('model = "digits-cnn"\ndataset = "digits"\nname = "old"\n')  # written before --precision
    assert load_run_job(run).precision == "fp32"
    resumed = resolve_job(None, model="digits-cnn", dataset="digits", out=str(run))
    assert resumed.precision == "fp32"  # a resumed job keeps its precision
    fresh = resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "new"))
    assert fresh.precision == "int8"  # the default: INT8 where the device runs it faster


def test_int8_is_not_kept_where_the_device_prices_it_slower():
    slow = sim(int8_gmacs=2.0, quant_ns=5.0)  # INT8 MACs 60x slower than the default: never pays
    ev = PolicyEvaluator("digits-cnn", "digits", device=slow, precision="int8", int8_scheme=SCHEME, round_to=8, proxy="bn:10")
    ratios = [0.3] * len(ev.groups)
    res = ev.evaluate(ratios)
    assert res.policy.graph_precision() == "fp32" and "quantize" not in res.phases
    slower = res.policy.metrics["int8_slower"]
    assert slower["int8_lut_ms"] > slower["fp32_lut_ms"]
    assert ev.predict_latency(ratios) == pytest.approx(ev.latency.predict_key(ev.kept(ratios)) * ev.lut_scale)  # the faster: fp32


def graph_ms(ev: PolicyEvaluator, ratios, marks) -> float:
    """LUT price of the graph `ratios` with `marks` (group -> precision) quantizes to."""
    policy = ev.policy(ratios, marks)
    key = ev.cache_key(policy) if policy.int8_groups() else policy.key()
    return ev.latency.predict_key(key, ev.kernels_of(ratios, marks), quant=bool(policy.int8_groups()))


def test_a_group_whose_int8_kernels_price_slower_stays_int8_where_its_borders_cost_more(mixed):
    """The per-layer rule: at (8, 8, 8, 8) channels the last layer's INT8 kernels (quantize,
    requantize, a narrow linear) cost sim-cpu more than its fp32 kernels, the others' less. But
    the graph with that layer in fp32 pays for a dequantize and a quantize at its borders and
    prices slower than the all-INT8 graph: the faster graph is kept, and the refusal recorded."""
    ratios = [0.9] * len(mixed.groups)
    key = mixed.kept(ratios)
    q, f = mixed.latency.group_costs(key, quant=True), mixed.latency.group_costs(key)
    slower = [g.name for g, a, b in zip(mixed.groups, q, f) if a > b]
    assert 0 < len(slower) < len(mixed.groups)
    assert mixed.int8_slower_groups(key) == slower
    assert sum(q) < mixed.latency.predict_key(key, quant=True)  # shares of the prediction, less its network terms

    demoted = dict.fromkeys(slower, "fp32")
    all_int8, with_fp32 = (
        graph_ms(mixed, ratios, "int8"),
        graph_ms(mixed, ratios, {g.name: "int8" for g in mixed.groups} | demoted),
    )
    assert all_int8 < with_fp32
    res = mixed.evaluate(ratios, precision="int8")
    assert res.policy.graph_precision() == "int8" and "int8_slower_groups" not in res.policy.metrics
    kept = res.policy.metrics["int8_slower_groups_kept"]
    assert kept["groups"] == slower
    assert (kept["marked_lut_ms"], kept["demoted_lut_ms"]) == pytest.approx((all_int8, with_fp32))

    wide = mixed.evaluate([0.0] * len(mixed.groups), precision="int8")  # wide layers: INT8 pays everywhere
    assert wide.policy.graph_precision() == "int8" and "int8_slower_groups_kept" not in wide.policy.metrics


def test_a_mixed_search_never_keeps_int8_on_a_group_whose_int8_kernels_price_slower_where_fp32_pays():
    """Where cheap quantize/dequantize make the borders pay (quant_ns 0, a cheaper kernel launch,
    slower INT8 MACs), the groups whose INT8 kernels price slower go fp32, and the mixed graph
    that leaves is the fastest of the three: as marked, with them in fp32, all fp32."""
    ev = PolicyEvaluator(
        "digits-cnn", "digits", device=sim(quant_ns=0.0, kernel_us=0.5, int8_gmacs=30.0), precision="mixed",
        int8_scheme=SCHEME, round_to=8, proxy="bn:10",
    )  # fmt: skip
    ratios = [0.9, 0.0, 0.9, 0.9]
    slower = ev.int8_slower_groups(ev.kept(ratios))
    assert 0 < len(slower) < len(ev.groups)
    res = ev.evaluate(ratios, precision="int8")
    assert res.policy.metrics["int8_slower_groups"] == slower
    assert set(res.policy.int8_groups()) == {g.name for g in ev.groups} - set(slower)  # never INT8 where it prices slower
    kept_ms = graph_ms(ev, ratios, res.policy.precisions())
    assert kept_ms < min(graph_ms(ev, ratios, "int8"), graph_ms(ev, ratios, "fp32"))
    assert res.latency_ms == pytest.approx(kept_ms * ev.lut_scale)  # in the dense reference frame


def test_the_environments_mark_precision_in_a_mixed_search(mixed):
    import gymnasium as gym
    import numpy as np
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401  (registers the ids)

    env = gym.make(envs.LAYER_PRUNE_ID, evaluator=mixed, budget=0.6, disable_env_checker=True)
    assert env.action_space.shape == (2,) and env.observation_space.shape == (18,)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    wanted = ["int8", "fp32", "int8", "fp32"][: len(mixed.groups)]
    for mark in wanted:
        obs, _, done, _, info = env.step(np.array([0.0, 0.5 if mark == "int8" else -0.5], dtype=np.float32))
        assert info["precision"] == mark
        if not done:
            assert obs[17] == (mark == "int8")  # the observation shows the previous group's mark
    assert done
    got = {g["name"]: g.get("precision", "fp32") for g in info["policy"]["groups"]}
    demoted = set(info["policy"]["metrics"].get("int8_slower_groups", []))
    whole = "int8_slower" in info["policy"]["metrics"]
    for g, mark in zip(mixed.groups, wanted):
        assert got[g.name] == ("fp32" if whole or g.name in demoted else mark)
    with pytest.raises(ValueError, match="a ratio and a precision"):
        env.reset(seed=0)
        env.step(np.zeros(1, dtype=np.float32))

    one = gym.make(envs.POLICY_PRUNE_ID, evaluator=mixed, budget=0.6, disable_env_checker=True)
    G = len(mixed.groups)
    assert one.action_space.shape == (2 * G,)
    one.reset(seed=0)
    *_, info = one.step(np.array([0.0] * G + [-1.0] * G, dtype=np.float32))
    assert all(g.get("precision", "fp32") == "fp32" for g in info["policy"]["groups"])


def test_ppo_marks_precision_in_a_mixed_search(tmp_path):
    from search.store import PRECISION_PARAM, load_records, open_storage

    job = mixed_search(tmp_path / "run", ["ppo"], 8)
    records = load_records(open_storage(job.storage_url), job.name)["ppo"]
    assert len(records) == 8
    assert all(any(k.startswith(PRECISION_PARAM) for k in r.grid_params) for r in records)
    marks = {g.get("precision", "fp32") for r in records for g in r.policy["groups"]}
    assert marks == {"fp32", "int8"}  # the agent's precision actions reach the policies
