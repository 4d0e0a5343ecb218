"""Fleet rollout: stable percentage split, checksum verification, atomic swap, fallback on load or self-test failure."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.edge.fleet import Device, UpdateError, UpdateManifest, in_rollout, publish, rollout_bucket
from serving.edge.manifest import write_manifest


@pytest.fixture
def releases(edge_bundle: Path, tmp_path: Path) -> tuple[UpdateManifest, UpdateManifest]:
    v1 = publish(edge_bundle, tmp_path / "v1", "v1", 100)
    v2 = publish(edge_bundle, tmp_path / "v2", "v2", 100)
    return v1, v2


def _variant(source: Path, tmp_path: Path, name: str, model_bytes: bytes) -> Path:
    """A bundle whose manifest is consistent (checksums pass) but whose model differs."""
    copy = tmp_path / name
    shutil.copytree(source, copy)
    (copy / "model.onnx").write_bytes(model_bytes)
    write_manifest(copy, "model.onnx", "sha256:" + "1" * 64)
    return copy


def test_split_over_many_devices_is_within_bound() -> None:
    update = UpdateManifest("v7", "a" * 64, 25.0, "file:///x")
    ids = [f"device-{i:05d}" for i in range(10_000)]
    share = sum(in_rollout(update, d) for d in ids) / len(ids)
    assert abs(share - 0.25) < 0.02  # binomial sd is 0.0043
    wider = replace(update, rollout_percent=60.0)
    assert all(in_rollout(wider, d) for d in ids if in_rollout(update, d)), (
        "raising the share only adds devices"
    )
    assert rollout_bucket("v7", "device-00001") == rollout_bucket("v7", "device-00001")
    assert not any(in_rollout(replace(update, rollout_percent=0), d) for d in ids[:500])
    assert all(in_rollout(replace(update, rollout_percent=100), d) for d in ids[:500])


def test_install_then_upgrade_keeps_previous(
    releases: tuple[UpdateManifest, UpdateManifest], tmp_path: Path
) -> None:
    v1, v2 = releases
    device = Device(tmp_path / "device", "dev-1")
    assert device.apply(v1).outcome == "installed"
    assert device.apply(v1).outcome == "up-to-date"
    result = device.apply(v2)
    assert result.outcome == "installed", result.detail
    assert (device.current, device.previous) == ("v2", "v1")
    assert (tmp_path / "device" / "current").is_symlink()
    assert device.load().self_test().passed
    assert sorted(p.name for p in device.bundles.iterdir()) == ["v1", "v2"]


def test_device_outside_the_rollout_does_not_take_it(edge_bundle: Path, tmp_path: Path) -> None:
    update = publish(edge_bundle, tmp_path / "pub", "v3", 10)
    outside = next(f"dev-{i}" for i in range(1000) if not in_rollout(update, f"dev-{i}"))
    result = Device(tmp_path / "device", outside).apply(update)
    assert result.outcome == "not-selected"
    assert Device(tmp_path / "device", outside).current is None


def test_corrupt_checksum_is_rejected(
    releases: tuple[UpdateManifest, UpdateManifest], tmp_path: Path
) -> None:
    v1, v2 = releases
    device = Device(tmp_path / "device", "dev-1")
    device.apply(v1)
    archive = Path(v2.url.removeprefix("file://"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    result = device.apply(v2)
    assert result.outcome == "rejected"
    assert "checksum mismatch" in result.detail
    assert device.current == "v1"
    assert not (device.bundles / "v2").exists()


def test_failing_self_test_falls_back(
    releases: tuple[UpdateManifest, UpdateManifest], edge_bundle: Path, bad_edge_bundle: Path, tmp_path: Path
) -> None:
    v1, _ = releases
    device = Device(tmp_path / "device", "dev-1")
    device.apply(v1)
    wrong = _variant(edge_bundle, tmp_path, "wrong", (bad_edge_bundle / "model.onnx").read_bytes())
    update = publish_unchecked(wrong, tmp_path / "pub", "v9")
    result = device.apply(update)
    assert result.outcome == "rolled-back", result.detail
    assert "self-test FAILED" in result.detail
    assert device.current == "v1"
    assert device.load().self_test().passed
    assert device.apply(update).outcome == "known-bad"


def test_bundle_that_fails_to_load_falls_back(
    releases: tuple[UpdateManifest, UpdateManifest], edge_bundle: Path, tmp_path: Path
) -> None:
    v1, _ = releases
    device = Device(tmp_path / "device", "dev-1")
    device.apply(v1)
    broken = _variant(edge_bundle, tmp_path, "broken", b"not an onnx graph")
    result = device.apply(publish_unchecked(broken, tmp_path / "pub", "v10"))
    assert result.outcome == "rolled-back"
    assert "ONNX Runtime cannot load it" in result.detail
    assert device.current == "v1"


def test_first_install_that_fails_leaves_no_current(edge_bundle: Path, tmp_path: Path) -> None:
    broken = _variant(edge_bundle, tmp_path, "broken", b"garbage")
    device = Device(tmp_path / "device", "dev-1")
    assert device.apply(publish_unchecked(broken, tmp_path / "pub", "v1")).outcome == "rolled-back"
    assert device.current is None


def test_publish_refuses_a_bundle_failing_its_self_test(
    edge_bundle: Path, bad_edge_bundle: Path, tmp_path: Path
) -> None:
    wrong = _variant(edge_bundle, tmp_path, "wrong", (bad_edge_bundle / "model.onnx").read_bytes())
    with pytest.raises(UpdateError, match="self-test"):
        publish(wrong, tmp_path / "pub", "v1", 100)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"version": "v1", "sha256": "zz", "rollout_percent": 5, "url": "x"}, "field sha256"),
        ({"version": "v1", "sha256": "a" * 64, "rollout_percent": 150, "url": "x"}, "rollout_percent"),
        ({"version": "../v1", "sha256": "a" * 64, "rollout_percent": 5, "url": "x"}, "field version"),
        ({"version": "v1", "sha256": "a" * 64, "url": "x"}, "missing field 'rollout_percent'"),
    ],
)
def test_malformed_update_manifest(body: dict[str, object], message: str) -> None:
    with pytest.raises(UpdateError, match=message):
        UpdateManifest.from_json(json.dumps(body))


def test_cli_publish_and_update(edge_bundle: Path, tmp_path: Path) -> None:
    from sluice.cli import app

    runner = CliRunner()
    pub = tmp_path / "pub"
    result = runner.invoke(
        app,
        [
            "edge",
            "publish",
            "--bundle",
            str(edge_bundle),
            "--out",
            str(pub),
            "--version",
            "v1",
            "--percent",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    args = ["edge", "update", "--manifest", str(pub / "update.json"), "--device-root", str(tmp_path / "d")]
    result = runner.invoke(app, [*args, "--device-id", "dev-1"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("installed")


def publish_unchecked(bundle: Path, out: Path, version: str) -> UpdateManifest:
    """Publish without the publisher's own self-test: a broken bundle that slipped through to the fleet."""
    import hashlib

    from serving.edge.fleet import _archive_bytes

    out.mkdir(parents=True, exist_ok=True)
    data = _archive_bytes(bundle)
    (out / f"{version}.tar.gz").write_bytes(data)
    return UpdateManifest(
        version, hashlib.sha256(data).hexdigest(), 100, (out / f"{version}.tar.gz").as_uri()
    )


@pytest.mark.timeout(30)
def test_update_fetched_over_http(edge_bundle: Path, tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    pub = tmp_path / "pub"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(pub))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v5.tar.gz"
        update = publish(edge_bundle, pub, "v5", 100, url=url)
        assert UpdateManifest.read(pub / "update.json").url == url
        result = Device(tmp_path / "device", "dev-1").apply(update)
        assert result.outcome == "installed", result.detail
        missing = replace(update, version="v6", url=url.replace("v5", "v6"))
        result = Device(tmp_path / "device", "dev-1").apply(missing)
        assert result.outcome == "rejected" and "cannot fetch" in result.detail
    finally:
        server.shutdown()
        server.server_close()
