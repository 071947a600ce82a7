"""``vkec2 bench launch|delete``: templates with a counter, the pacing bucket, both targets, exit codes.

The standalone tests run the real manifest scanner (:class:`producer.standalone.ManifestSource`) on
the directory the command writes to, with a stand-in for the fleet that records each pod and marks
it Running at once in the Redis store (the same records ``--wait`` reads), so no worker, EC2 or agent
is involved; the API tests run against the Kubernetes API double, with a thread that plays the
kubelet and reports every pod Running.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from producer.standalone import ManifestSource, parse_manifest, selector_mismatch
from tests.k8s.apiserver import FakeKubeApiServer
from tests.ops.test_examples import local_node_labels
from vkec2.cli.benchload import RUN_LABEL, Pacer, PodTemplate, RenderOptions, Tally, TemplateError
from vkec2.cli.main import main
from vkec2.domain.models import Phase
from vkec2.store.redis_store import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench" / "pod.yaml"
NODE = "vk-bench-0"


def _template(tmp_path: Path, text: str) -> PodTemplate:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return PodTemplate.load(path)


# -- rendering ---------------------------------------------------------------------------------------


def test_the_example_renders_n_numbered_pods_labelled_with_the_run() -> None:
    pods = PodTemplate.load(EXAMPLE).render_all(RenderOptions("r1", 3, namespace="team", node="vk-0"))
    assert [p["metadata"]["name"] for p in pods] == ["bench-r1-0", "bench-r1-1", "bench-r1-2"]
    for i, pod in enumerate(pods):
        assert pod["metadata"]["namespace"] == "team" and pod["spec"]["nodeName"] == "vk-0"
        assert pod["metadata"]["labels"][RUN_LABEL] == "r1"
        assert pod["metadata"]["labels"]["vkec2.io/bench-index"] == str(i)
        assert f"bench pod {i} of 3" in pod["spec"]["containers"][0]["command"][-1]
    # The standalone producer takes it as it is.
    (parsed,) = parse_manifest("p.yaml", yaml.safe_dump(pods[0]), NODE)
    assert parsed["metadata"]["name"] == "bench-r1-0"


def test_the_example_ships_as_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["vkec2.examples.bench"] == ["*.yaml"]
    assert files("vkec2").joinpath("examples", "bench", "pod.yaml").is_file()


def test_the_local_fleets_node_takes_the_example() -> None:
    (pod,) = PodTemplate.load(EXAMPLE).render_all(RenderOptions("r0", 1))
    assert pod["spec"]["nodeSelector"] and selector_mismatch(pod, local_node_labels()) == {}


def test_namespace_defaults_to_the_templates_then_default_and_the_name_to_the_generated_one(
    tmp_path: Path,
) -> None:
    text = "kind: Pod\nmetadata: {namespace: ns1}\nspec: {containers: [{name: c, image: x}]}\n"
    (pod,) = _template(tmp_path, text).render_all(RenderOptions("r2", 1, prefix="load"))
    assert pod["metadata"]["name"] == "load-r2-0" and pod["metadata"]["namespace"] == "ns1"
    assert pod["apiVersion"] == "v1" and "nodeName" not in pod["spec"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata: {name: '{{ nmae }}'}\n", r"pod 0\): 'nmae' is undefined; the variables are i, n, name"),
        ("metadata: {name: {{ name }\n", "template syntax error on line 1"),
        ("metadata: {name: '{{ name }}'\nspec: [\n", "pod 0\\): the rendered text is not valid YAML"),
        ("apiVersion: apps/v1\nkind: Deployment\n", "expected a v1 Pod, not apps/v1/Deployment"),
        ("kind: Pod\nspec: {containers: []}\n", "spec.containers must list at least one container"),
        ("kind: Pod\n---\nkind: Pod\n", "exactly one YAML document, not 2"),
        (
            "metadata: {name: Fixed_Name}\nspec: {containers: [{name: c}]}\n",
            "'Fixed_Name' is not a valid pod",
        ),
        (
            "metadata: {name: fixed}\nspec: {containers: [{name: c}]}\n",
            "pods 0 and 1 are both named default/fixed",
        ),
    ],
)
def test_a_bad_template_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        _template(tmp_path, text).render_all(RenderOptions("r3", 2))


# -- pacing and figures ------------------------------------------------------------------------------


def test_the_pacer_reserves_tokens_on_a_schedule_that_does_not_drift() -> None:
    now = [100.0]
    pacer = Pacer(5.0, burst=2, clock=lambda: now[0])
    assert [pacer.reserve() for _ in range(5)] == pytest.approx([0, 0, 0.2, 0.4, 0.6])
    now[0] += 1.0  # a second later the debt (0.6 s) is paid and 2 tokens saved at most
    assert [pacer.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.2])
    assert Pacer(None).reserve() == 0 and Pacer(0).reserve() == 0


def test_the_tally_gives_rate_time_to_all_percentiles_and_failures_by_reason() -> None:
    tally = Tally("Running", begun=0.0)
    for i in range(10):
        tally.start(f"ns/p{i}", i * 0.5)
        tally.call(i * 0.5, i * 0.5 + 0.1)
    for i in range(8):
        tally.reach(f"ns/p{i}", i * 0.5 + (i + 1))  # latencies 1..8 s
    tally.fail("ns/p8", "ErrImage")
    tally.fail("ns/p0", "late")  # reached already: not a failure
    summary = tally.summary(10, {"ns/p9": "Pending Booting"})
    assert (summary.started, summary.reached) == (10, 8)
    assert summary.rate == pytest.approx(10 / 4.6)
    assert summary.time_to_all is None  # not all reached
    assert (summary.p50, summary.p90, summary.p99, summary.slowest) == (4.0, 8.0, 8.0, 8.0)
    assert summary.failures == {"ErrImage": 1, "not Running: Pending Booting": 1}
    assert summary.to_dict()["rate_per_second"] == round(10 / 4.6, 3)


# -- the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["launch", "--count", "2", "--manifests", "{d}", "--kubeconfig", "{k}"], "exclude each other"),
        (["launch", "--count", "0", "--manifests", "{d}"], "0 is not in the range x>=1"),
        (
            ["launch", "--count", "2", "--manifests", "{d}", "--run-id", "Bad_ID"],
            "Invalid value for --run-id",
        ),
        (["launch", "--count", "2", "--manifests", "{d}"], "reads the pods' status from the fleet's Redis"),
        (["delete", "--manifests", "{d}", "--no-wait"], "--run-id ID, or pass --all"),
        (["delete", "--manifests", "{d}", "--run-id", "x", "--all"], "--run-id ID, or pass --all"),
    ],
)
def test_usage_errors_exit_2_and_make_nothing(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("VKEC2_CONFIG", raising=False)
    (tmp_path / "kubeconfig").write_text("{}")
    args = [a.format(d=tmp_path / "pods", k=tmp_path / "kubeconfig") for a in argv]
    (tmp_path / "pods").mkdir()
    template = ["--template", str(EXAMPLE)] if argv[0] == "launch" else []
    assert main(["bench", *args, *template]) == 2
    assert message in capsys.readouterr().err
    assert list((tmp_path / "pods").iterdir()) == []


def test_a_bad_template_exits_2_naming_it(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata: {name: '{{ name }}-{{ index }}'}\nspec: {containers: [{name: c}]}\n")
    (tmp_path / "pods").mkdir()
    argv = ["bench", "launch", "--count", "3", "--template", str(bad), "--manifests", str(tmp_path / "pods")]
    assert main([*argv, "--no-wait"]) == 2
    assert f"{bad} (pod 0): 'index' is undefined" in capsys.readouterr().err
    assert list((tmp_path / "pods").iterdir()) == []


# -- standalone: manifests in a producer's directory --------------------------------------------------


def _launch(directory: Path, count: int, *extra: str) -> list[str]:
    return ["bench", "launch", "--count", str(count), "--template", str(EXAMPLE),
            "--manifests", str(directory), "-o", "json", *extra]  # fmt: skip


def test_manifests_mode_writes_n_files_and_delete_removes_only_its_own(tmp_path: Path, capsys: Any) -> None:
    pods = tmp_path / "pods"
    pods.mkdir()
    (pods / "mine.yaml").write_text("kind: Pod\nmetadata: {name: mine}\nspec: {containers: [{name: c}]}\n")
    assert main(_launch(pods, 5, "--run-id", "one", "--no-wait", "--node", NODE)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["run_id"], summary["count"], summary["started"]) == ("one", 5, 5)
    assert main(_launch(pods, 2, "--run-id", "two", "--no-wait")) == 0
    capsys.readouterr()
    files = sorted(p.name for p in pods.iterdir())
    assert (
        len(files) == 8
        and "default_bench-one-4.yaml" in files
        and not [f for f in files if f.startswith(".")]
    )
    for name in files:
        (pod,) = parse_manifest(name, (pods / name).read_text(), NODE)
        if name != "mine.yaml":
            assert pod["metadata"]["labels"][RUN_LABEL] in ("one", "two")

    # The same run ID again would overwrite: refused, with what was made and how to undo it.
    assert main(_launch(pods, 2, "--run-id", "two", "--no-wait")) == 1
    assert "exists already" in capsys.readouterr().err

    assert (
        main(["bench", "delete", "--run-id", "one", "--manifests", str(pods), "--no-wait", "-o", "json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["started"] == 5
    assert sorted(p.name for p in pods.iterdir()) == [
        "default_bench-two-0.yaml",
        "default_bench-two-1.yaml",
        "mine.yaml",
    ]
    assert main(["bench", "delete", "--all", "--manifests", str(pods), "--no-wait"]) == 0
    assert [p.name for p in pods.iterdir()] == ["mine.yaml"]


class StandInFleet:
    """The fleet's side of standalone mode for the test: records each pod and marks it Running at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.node = NODE

    def create(self, pod: dict[str, Any], *, rebuilt: bool = False) -> int:
        generation = self.store.put_desired(pod, NODE, rebuilt=rebuilt)
        with self.store.locked(pod["metadata"]["uid"]) as lock:
            lock.write({"phase": Phase.RUNNING, "reason": "Started"})
        return generation

    def delete(self, uid: str) -> None:
        self.store.forget(uid)


@pytest.fixture
def standalone(tmp_path: Path, store: Store, redis_url: str) -> Iterator[tuple[Path, Path]]:
    pods = tmp_path / "pods"
    pods.mkdir()
    config = tmp_path / "vkec2.yaml"
    config.write_text(yaml.safe_dump({"redis_url": redis_url, "cluster_name": store.keys.cluster}))
    source = ManifestSource(pods, StandInFleet(store), interval=0.05)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    yield pods, config
    stop.set()
    thread.join(5)


def test_manifests_mode_waits_for_running_then_for_gone_through_the_records(
    standalone: tuple[Path, Path], store: Store, capsys: Any
) -> None:
    pods, config = standalone
    assert (
        main(_launch(pods, 6, "--run-id", "w", "--config", str(config), "--rate", "50", "--timeout", "20"))
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["started"], summary["reached"], summary["failures"]) == (6, 6, {})
    assert summary["time_to_all_seconds"] > 0 and summary["p50_seconds"] <= summary["p99_seconds"]
    assert {r.name for r in store.records() if r.phase is Phase.RUNNING} == {f"bench-w-{i}" for i in range(6)}

    delete = [
        "bench",
        "delete",
        "--run-id",
        "w",
        "--manifests",
        str(pods),
        "--config",
        str(config),
        "-o",
        "json",
    ]
    assert main([*delete, "--timeout", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["goal"], summary["started"], summary["reached"]) == ("gone", 6, 6)
    assert store.records() == [] and list(pods.iterdir()) == []


def test_manifests_mode_reports_pods_not_running_by_the_timeout(
    tmp_path: Path, store: Store, redis_url: str, capsys: Any
) -> None:
    pods = tmp_path / "pods"  # no producer reads this directory
    pods.mkdir()
    config = tmp_path / "vkec2.yaml"
    config.write_text(yaml.safe_dump({"redis_url": redis_url, "cluster_name": store.keys.cluster}))
    assert main(_launch(pods, 2, "--run-id", "late", "--config", str(config), "--timeout", "0.5")) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["failures"] == {"not Running: not picked up by the producer": 2}
    assert "2 of 2 pods not Running" in captured.err and "vkec2 bench delete --run-id late" in captured.err


# -- the Kubernetes API ------------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as server:
        yield server


def _kubelet(server: FakeKubeApiServer, stop: threading.Event) -> None:
    """Report every pod bound to NODE Running, as a kubelet would."""
    with client.ApiClient(client.Configuration(host=server.url)) as api_client:
        core = client.CoreV1Api(api_client)
        while not stop.is_set():
            for pod in server.list_objects("pods"):
                if pod["spec"].get("nodeName") == NODE and pod["status"].get("phase") != "Running":
                    body = {"status": {"phase": "Running"}}
                    core.patch_namespaced_pod_status(
                        pod["metadata"]["name"], pod["metadata"]["namespace"], body
                    )
            stop.wait(0.05)


def _api_launch(server: FakeKubeApiServer, count: int, *extra: str) -> list[str]:
    return ["bench", "launch", "--count", str(count), "--template", str(EXAMPLE), "--kube-host", server.url,
            "--node", NODE, "-o", "json", *extra]  # fmt: skip


def test_api_mode_creates_labelled_pods_at_the_rate_waits_for_running_and_deletes_them(
    api: FakeKubeApiServer, capsys: Any
) -> None:
    api.create("pods", {"metadata": {"name": "other", "labels": {RUN_LABEL: "someone-else"}},
                        "spec": {"containers": [{"name": "c"}]}})  # fmt: skip
    stop = threading.Event()
    kubelet = threading.Thread(target=_kubelet, args=(api, stop), daemon=True)
    kubelet.start()
    try:
        begun = time.monotonic()
        assert main(_api_launch(api, 6, "--run-id", "api", "--rate", "10", "--timeout", "20")) == 0
        elapsed = time.monotonic() - begun
        summary = json.loads(capsys.readouterr().out)
        assert (summary["started"], summary["reached"], summary["failures"]) == (6, 6, {})
        assert elapsed >= 0.5  # 6 creates at 10 per second, burst 1: the last is due 0.5 s after the first
        assert api.request_count("create", "pods") == 6
        ours = [p for p in api.list_objects("pods") if p["metadata"]["labels"].get(RUN_LABEL) == "api"]
        assert sorted(p["metadata"]["name"] for p in ours) == [f"bench-api-{i}" for i in range(6)]
        assert all(p["spec"]["nodeName"] == NODE and p["status"]["phase"] == "Running" for p in ours)
    finally:
        stop.set()
        kubelet.join(5)

    delete = [
        "bench",
        "delete",
        "--run-id",
        "api",
        "--kube-host",
        api.url,
        "--grace-period",
        "0",
        "-o",
        "json",
    ]
    assert main([*delete, "--timeout", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["goal"], summary["started"], summary["reached"]) == ("gone", 6, 6)
    assert [p["metadata"]["name"] for p in api.list_objects("pods")] == ["other"]


def test_an_api_error_stops_the_launch_and_says_what_was_made(api: FakeKubeApiServer, capsys: Any) -> None:
    api.create("pods", {"metadata": {"name": "bench-err-2"}, "spec": {"containers": [{"name": "c"}]}})
    assert main(_api_launch(api, 6, "--run-id", "err", "--rate", "20", "--no-wait")) == 1
    err = capsys.readouterr().err
    made = [p for p in api.list_objects("pods") if p["metadata"].get("labels", {}).get(RUN_LABEL) == "err"]
    assert "default/bench-err-2: 409 AlreadyExists" in err
    assert f"{len(made)} of 6 done" in err and "vkec2 bench delete --run-id err" in err
    assert {"bench-err-0", "bench-err-1"} <= {p["metadata"]["name"] for p in made}
    # The command returns once its calls are over: what it said it made is what the server has.
    assert api.request_count("create", "pods") == len(made) + 1 < 6 + 1


@pytest.mark.parametrize(("wait", "message"), [("--wait", "cannot list pods"), ("--no-wait", "0 of 2 done")])
def test_an_unreachable_api_server_exits_1_naming_it(wait: str, message: str, capsys: Any) -> None:
    argv = [
        "bench",
        "launch",
        "--count",
        "2",
        "--template",
        str(EXAMPLE),
        "--kube-host",
        "http://127.0.0.1:9",
    ]
    assert main([*argv, wait]) == 1
    err = capsys.readouterr().err
    assert message in err and "127.0.0.1" in err
