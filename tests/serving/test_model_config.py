"""models.config: TF Serving's text format, version policies, labels, versions on disk."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from towerflow import model_config as mc


def make_version(base: Path, version: int | str, complete: bool = True) -> Path:
    folder = base / str(version)
    (folder / "variables").mkdir(parents=True)
    if complete:
        (folder / "saved_model.pb").write_bytes(b"")
    return folder


@pytest.fixture
def models(tmp_path: Path) -> Path:
    for v in (1, 2, 3):
        make_version(tmp_path / "retrieval", v)
    make_version(tmp_path / "ranking", 1)
    return tmp_path


def test_written_file_is_the_text_format_tf_serving_reads(models: Path) -> None:
    path = mc.write_models_config(
        models / "models.config",
        [
            mc.ModelEntry.under(
                models, "retrieval", policy=mc.VersionPolicy.specific(2, 3), labels={"stable": 2, "canary": 3}
            ),
            mc.ModelEntry.under(models, "ranking", policy=mc.VersionPolicy.latest(2)),
            mc.ModelEntry.under(models, "popular", policy=mc.VersionPolicy.all()),
        ],
    )
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    retrieval, ranking, popular = config.model_config_list.config
    assert retrieval.name == "retrieval"
    assert retrieval.base_path == str(models / "retrieval")
    assert retrieval.model_platform == "tensorflow"
    assert list(retrieval.model_version_policy.specific.versions) == [2, 3]
    assert dict(retrieval.version_labels) == {"stable": 2, "canary": 3}
    assert ranking.model_version_policy.latest.num_versions == 2
    assert popular.model_version_policy.WhichOneof("policy_choice") == "all"
    assert 'version_labels {\n      key: "canary"\n      value: 3\n    }' in path.read_text()
    assert mc.read_models_config(path)[0].labels == {"stable": 2, "canary": 3}


def test_round_trip_keeps_every_field(models: Path) -> None:
    entries = [
        mc.ModelEntry.under(models, "retrieval", policy=mc.VersionPolicy.specific(3, 1), labels={"stable": 1}),
        mc.ModelEntry.under(models, "ranking"),
    ]
    path = mc.write_models_config(models / "models.config", entries)
    back = mc.read_models_config(path)
    assert back[0].policy == mc.VersionPolicy.specific(1, 3)
    assert back[1].policy == mc.VersionPolicy.latest(1)
    assert [e.name for e in back] == ["retrieval", "ranking"]
    assert back[0].labels == {"stable": 1}


def test_write_is_atomic_and_leaves_no_temp_files(models: Path) -> None:
    path = models / "models.config"
    mc.write_models_config(path, [mc.ModelEntry.under(models, "ranking")])
    mc.write_models_config(path, [mc.ModelEntry.under(models, "retrieval")])
    assert sorted(p.name for p in models.iterdir() if p.is_file()) == ["models.config"]
    assert [e.name for e in mc.read_models_config(path)] == ["retrieval"]


def test_unset_policy_means_latest_one_as_in_tf_serving() -> None:
    config = mc.parse('model_config_list { config { name: "m" base_path: "/m" model_platform: "tensorflow" } }')
    (entry,) = mc.from_proto(config)
    assert entry.policy == mc.VersionPolicy.latest(1)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (mc.VersionPolicy.latest(1), {7}),
        (mc.VersionPolicy.latest(2), {3, 7}),
        (mc.VersionPolicy.all(), {1, 3, 7}),
        (mc.VersionPolicy.specific(1, 9), {1}),
    ],
)
def test_policy_selects_versions_on_disk(policy: mc.VersionPolicy, expected: set[int]) -> None:
    assert policy.select([1, 3, 7]) == expected


def test_list_versions_skips_temp_and_half_written_dirs(tmp_path: Path) -> None:
    base = tmp_path / "retrieval"
    make_version(base, 1)
    make_version(base, 10)
    make_version(base, 3, complete=False)  # no saved_model.pb yet
    make_version(base, ".tmp-4-abc")
    make_version(base, "notes")
    (base / "5").write_text("a file, not a folder")
    assert mc.list_versions(base) == [1, 10]
    assert mc.list_versions(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }',
            "multiple",
        ),
        ('model_config_list { config { name: "a" base_path: "relative/a" } }', "absolute"),
        ('model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }', "platform"),
        ("model_config_list { config { name: ", "not a valid ModelServerConfig"),
    ],
)
def test_configs_tf_serving_rejects_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        mc.read_models_config(path)


def test_set_label_promotes_and_rolls_back(models: Path) -> None:
    path = mc.write_models_config(
        models / "models.config",
        [mc.ModelEntry.under(models, "retrieval", policy=mc.VersionPolicy.specific(1, 2), labels={"stable": 1})],
    )
    assert mc.set_label(path, "retrieval", "stable", 2).labels == {"stable": 2}
    assert mc.set_label(path, "retrieval", "stable", 1).labels == {"stable": 1}
    assert mc.read_models_config(path)[0].labels == {"stable": 1}


def test_set_label_refuses_versions_the_server_would_never_load(models: Path) -> None:
    path = mc.write_models_config(
        models / "models.config",
        [mc.ModelEntry.under(models, "retrieval", policy=mc.VersionPolicy.specific(1, 2))],
    )
    with pytest.raises(FileNotFoundError, match="publish it first"):
        mc.set_label(path, "retrieval", "canary", 9)
    with pytest.raises(ValueError, match="add_version"):
        mc.set_label(path, "retrieval", "canary", 3)
    with pytest.raises(KeyError, match="not in"):
        mc.set_label(path, "nope", "canary", 1)
    assert mc.add_version(path, "retrieval", 3).policy == mc.VersionPolicy.specific(1, 2, 3)
    assert mc.set_label(path, "retrieval", "canary", 3).labels == {"canary": 3}


def test_add_version_leaves_disk_following_policies_alone(models: Path) -> None:
    path = mc.write_models_config(models / "models.config", [mc.ModelEntry.under(models, "retrieval")])
    assert mc.add_version(path, "retrieval", 2).policy == mc.VersionPolicy.latest(1)


def test_concurrent_label_changes_are_not_lost(models: Path) -> None:
    path = mc.write_models_config(
        models / "models.config", [mc.ModelEntry.under(models, "retrieval", policy=mc.VersionPolicy.all())]
    )
    labels = [f"l{i}" for i in range(8)]
    threads = [
        threading.Thread(target=mc.set_label, args=(path, "retrieval", lb, 1 + i % 3)) for i, lb in enumerate(labels)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(mc.read_models_config(path)[0].labels) == labels
