"""Property-based bad input: configuration files, pod annotations, pod manifests and task kwargs.

Each test feeds hypothesis-generated garbage (and near-misses of valid input) to the code that
reads it and asserts the only outcomes are a valid result or the one clean error of that input,
naming what is wrong: :class:`~vkec2.config.InvalidConfig` with every line naming its file or
variable, :class:`~vkec2.errors.InvalidPodSpec` naming the annotation,
:class:`~producer.standalone.ManifestError` naming the file, and ``InvalidTaskArguments`` for the
pod tasks as ``celery -A tasks call --kwargs`` delivers them, with nothing written to the store and
no EC2 call. Never a traceback of another exception. The conftest's ``vkec2`` profile keeps the
cases reproducible and the terminal summary prints how many each test tried.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from producer.standalone import ManifestError, parse_manifest
from tasks import pods
from tests.unit.fleet.world import UID, World
from tests.unit.fleet.world import settings as world_settings
from vkec2.config import InvalidConfig, Settings, load_config
from vkec2.config.allowlist import ANY
from vkec2.contract import ANNOTATION_PREFIX
from vkec2.domain.allowlist import GOVERNED, configured
from vkec2.domain.podspec import ANNOTATIONS, launch_params
from vkec2.errors import InvalidPodSpec, InvalidTaskArguments

# -- shared strategies --------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
#: JSON-like values, as a YAML or JSON file or a ``--kwargs`` object can hold them.
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)

# -- configuration files ------------------------------------------------------------------------

#: Real key paths of the settings (so hypothesis reaches the validators) and some that are not.
SECTION_KEYS = {
    name: list(getattr(Settings.model_fields[name].annotation, "model_fields", {}) or ["x"])
    for name in ("aws", "ec2", "agent", "node", "celery", "health", "flower", "logging", "allowlists")
}
TOP_KEYS = [*Settings.model_fields, "ClusterName", "VMConfig", "WarmPoolConfig", "no_such_key"]


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=5, unique=True)):
        if key in SECTION_KEYS and draw(st.booleans()):
            names = st.sampled_from([*SECTION_KEYS[key], "bogus"])
            doc[key] = draw(st.dictionaries(names, json_values, max_size=4))
        else:
            doc[key] = draw(json_values)
    return doc


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vkec2-fuzz-") as directory:
        yield Path(directory)


def _assert_clean_config_error(error: InvalidConfig, path: Path) -> None:
    assert error.errors, "an InvalidConfig without a line"
    for line in error.errors:
        assert line.startswith((f"{path}:", "env VKEC2_")), line


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=config_documents(), as_json=st.booleans())
def test_fuzz_config_files_load_or_name_the_bad_key(
    scratch: Path, doc: dict[str, Any], as_json: bool
) -> None:
    path = scratch / ("c.json" if as_json else "c.yaml")
    try:
        path.write_text(json.dumps(doc) if as_json else yaml.safe_dump(doc))
    except (ValueError, yaml.YAMLError):
        assume(False)  # not representable in that format (a huge int, NaN in strict JSON)
    try:
        loaded = load_config(path, env={})
    except InvalidConfig as error:
        _assert_clean_config_error(error, path)
    else:
        assert isinstance(loaded.settings, Settings)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    suffix=st.sampled_from([".yaml", ".json"]),
)
def test_fuzz_config_bytes_load_or_name_the_file(scratch: Path, raw: bytes, suffix: str) -> None:
    path = scratch / f"raw{suffix}"
    path.write_bytes(raw)
    try:
        load_config(path, env={})
    except InvalidConfig as error:
        _assert_clean_config_error(error, path)


@settings(max_examples=150)
@given(
    env=st.dictionaries(
        st.sampled_from(
            [
                "VKEC2_AGENT__PORT",
                "VKEC2_EC2__SUBNETS",
                "VKEC2_ALLOWLISTS__DEFAULT__IMAGES",
                "VKEC2_REDIS_URL",
                "VKEC2_WARM_POOLS",
                "VKEC2_ALLOWLISTS__NAMESPACES",
                "VKEC2_NODE__CPU",
                "VKEC2_NOPE",
            ]
        ),
        st.text(max_size=40) | json_values.map(json.dumps),
        max_size=3,
    )
)
def test_fuzz_environment_overrides_load_or_name_the_variable(env: dict[str, str]) -> None:
    try:  # agents on loopback: the plaintext rule (vkec2/config/transport.py) is not what is fuzzed
        load_config(None, env={"VKEC2_AGENT__ENDPOINT": "static:127.0.0.1:8200", **env})
    except InvalidConfig as error:
        assert error.errors
        for line in error.errors:
            assert line.startswith("env VKEC2_"), line


# -- pod annotations ----------------------------------------------------------------------------

ALLOW_SETTINGS = Settings.model_validate(
    {
        "ec2": {
            "image_id": "ami-0a",
            "subnets": ["subnet-0a"],
            "security_groups": ["sg-0a"],
            "key_pair": "kp",
        },
        "warm_pools": [
            {"name": "mac", "instance_type": "mac2.metal", "subnets": ["subnet-0m"], "host_pool": "macs"}
        ],
        "host_pools": [{"name": "macs", "instance_type": "mac2.metal", "subnets": ["subnet-0m"]}],
        "allowlists": {
            "default": {"subnets": ["subnet-0b"], "instance_types": ["c5.large"]},
            "namespaces": {"lab": {"instance_types": [ANY], "images": ["ami-0lab"]}},
        },
    }
)
#: Plausible values (configured, allowed, neither) and near-misses, per annotation.
NEAR = st.sampled_from(
    [
        "ami-0a",
        "ami-0lab",
        "ami-0evil",
        "subnet-0a",
        "subnet-0b",
        "subnet-0m",
        "subnet-0evil",
        "sg-0a",
        "sg-0a,sg-0evil",
        " sg-0a , sg-0a ",
        "kp",
        "other-kp",
        "m5.large",
        "c5.large",
        "mac2.metal",
        "p5.48xlarge",
        "m5.large,c5.large",
        "m5.large,,",
        "mac",
        "prof",
        "arn:aws:iam::123456789012:instance-profile/x",
        "spot",
        "spot-or-on-demand",
        "",
        " ",
        "*",
        '{"a": "b"}',
        "{",
        "\x00",
        "ami-" + "0" * 40,
        '[{"device": "/dev/sdf", "size_gib": 10}]',
        '[{"device": "/dev/sdf", "size_gib": 10, "type": "io2"}]',
        '[{"device": "/dev/sdf", "size_gib": 500, "type": "st1"}]',
        '[{"device": "/dev/sda1", "size_gib": 10}]',
        "[]",
    ]
)
annotation_values = st.one_of(NEAR, st.text(max_size=40), scalars, json_values)
annotation_keys = st.sampled_from([f"{ANNOTATION_PREFIX}{name}" for name in ANNOTATIONS]) | st.text(
    max_size=20
)


@settings(max_examples=200)
@given(
    annotations=st.dictionaries(annotation_keys, annotation_values, max_size=5) | json_values,
    namespace=st.sampled_from(["default", "lab", "team-a"]) | scalars,
)
def test_fuzz_annotations_give_allowed_params_or_a_clean_refusal(annotations: Any, namespace: Any) -> None:
    pod = {"metadata": {"uid": "u-1", "namespace": namespace, "annotations": annotations}}
    try:
        params = launch_params(ALLOW_SETTINGS, pod)
    except InvalidPodSpec as error:
        assert error.reason in {
            "InvalidAnnotation",
            "UnknownWarmPool",
            "MissingImage",
            "AnnotationNotAllowed",
            "UnknownHostPool",
            "HostPoolCannotFit",
            "HostPoolRequired",
        }
        assert error.message
        if error.reason in ("InvalidAnnotation", "AnnotationNotAllowed"):
            assert "annotation" in error.message
        return
    # Whatever was launched is configured or on the pod's namespace's allowlist.
    ns = namespace if isinstance(namespace, str) and namespace else "default"
    known = configured(ALLOW_SETTINGS)
    chosen = {
        "subnets": [params.subnet_id] if params.subnet_id else [],
        "security_groups": list(params.security_groups),
        "key_pairs": [params.key_pair] if params.key_pair else [],
        "images": [params.image_id],
        "instance_types": [params.instance_type, *params.fallback_types],
        "instance_profiles": [params.instance_profile] if params.instance_profile else [],
        "volume_types": [volume.type for volume in params.launch.volumes],
        "capacity_types": [params.capacity_type],
    }
    for kind in set(GOVERNED.values()):
        allowed = ALLOW_SETTINGS.allowlists.allowed(ns, kind)
        for value in chosen[kind]:
            assert ANY in allowed or value in known[kind] or value in allowed, (kind, value, ns)


# -- pod manifests (standalone mode) --------------------------------------------------------------

POD_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "apps/v1"]) | json_values,
        "kind": st.sampled_from(["Pod", "List", "Deployment"]) | json_values,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": st.text(max_size=10) | json_values,
                "namespace": json_values,
                "annotations": json_values,
                "uid": json_values,
            },
        )
        | json_values,
        "spec": st.fixed_dictionaries(
            {}, optional={"containers": st.lists(json_values, max_size=2) | json_values}
        )
        | json_values,
        "items": st.lists(json_values, max_size=3) | json_values,
    },
)
manifest_texts = st.one_of(
    st.lists(POD_LIKE | json_values, max_size=3).map(lambda docs: yaml.safe_dump_all(docs)),
    st.text(max_size=200),
    st.sampled_from(
        [
            "a: &x [*x]\n",
            "kind: List\nitems: 5\n",
            "{metadata: {name: a, annotations: [1]}, spec: {containers: [1]}}",
            "metadata: {name: a, namespace: [1]}\nspec: {containers: [c]}\n",
            "- &a [*a]\n",
        ]
    ),
)


@settings(max_examples=200)
@given(text=manifest_texts)
def test_fuzz_manifests_parse_or_name_the_file(text: str) -> None:
    try:
        pods_ = parse_manifest("dir/pods.yaml", text, "vk-node")
    except ManifestError as error:
        assert str(error).startswith("dir/pods.yaml"), str(error)
        return
    for pod in pods_:
        meta = pod["metadata"]
        assert isinstance(meta["name"], str) and meta["name"]
        assert isinstance(meta["namespace"], str) and meta["namespace"]
        assert isinstance(meta["uid"], str) and isinstance(meta["annotations"], dict)
        assert pod["spec"]["nodeName"] == "vk-node"


# -- task kwargs, as `celery -A tasks call NAME --kwargs JSON` delivers them ----------------------

task_kwargs = st.dictionaries(
    st.sampled_from(["uid", "generation", "continuation", "self", "uuid", ""]) | st.text(max_size=8),
    json_values | st.sampled_from(["u-1", UID, "7d3c9a4e-0000-4000-8000-00000000000f", "a/b", "../x", "*"]),
    max_size=4,
)


@settings(max_examples=200)
@given(task=st.sampled_from([pods.create, pods.update, pods.delete]), kwargs=task_kwargs)
def test_fuzz_task_kwargs_are_refused_cleanly_and_write_nothing(task: Any, kwargs: dict[str, Any]) -> None:
    assume(kwargs.get("uid") != UID)  # the world's own pod: a real step, which writes by design
    world = World(world_settings())
    world.seed()
    before = json.dumps(world.store.hashes, sort_keys=True, default=str)
    ctx = SimpleNamespace(settings=world.settings, store=world.store, lifecycle=world.lifecycle)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pods, "fleet", lambda: ctx)
        result = task.apply(kwargs=kwargs)
    if result.failed():
        assert isinstance(result.result, InvalidTaskArguments), repr(result.result)
        assert result.result.reason == "InvalidTaskArguments" and "task argument" in result.result.message
    else:
        assert result.result == "unknown pod"
    assert world.store.writes == [] and world.ec2.calls == [] and world.agents.calls == []
    assert json.dumps(world.store.hashes, sort_keys=True, default=str) == before


#: Passwords as operators write them, percent-encoded or not.
SECRETS = ["Fz-7c1d-secret", "Fz/7c1d@secret", "Fz 7c1d;secret", "Fz:7c1d%40secret"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secret=st.sampled_from(SECRETS),
    scheme=st.sampled_from(["redis", "rediss", "sentinel", "unix", "http", "", "redis+x"]),
    user=st.sampled_from(["", "fleet", "a b"]),
    rest=st.text(max_size=20),
    pairs=st.lists(st.text(max_size=8), max_size=2),
)
def test_fuzz_config_errors_never_echo_a_password(
    scratch: Path, secret: str, scheme: str, user: str, rest: str, pairs: list[str]
) -> None:
    doc = {
        "redis_url": f"{scheme}://{user}:{secret}@{rest}",
        "flower": {"basic_auth": [f"{p}:{secret}" for p in pairs] or [f"ops:{secret},"]},
    }
    path = scratch / "secret.json"
    path.write_text(json.dumps(doc))
    try:
        load_config(path, env={})
    except InvalidConfig as error:
        assert secret not in str(error)
