"""Edge updates under hostile manifests and archives, and under crashes and transient faults mid-install."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from serving.edge.fleet import TRANSIENT_LIMIT, Device, UpdateError, UpdateManifest, publish
from serving.edge.manifest import EdgeBundleError, verify
from serving.edge.runtime import EdgeModel

pytestmark = pytest.mark.timeout(60)


def _copy(edge_bundle: Path, tmp_path: Path, name: str = "copy") -> Path:
    copy = tmp_path / name
    shutil.copytree(edge_bundle, copy)
    return copy


def _edit_manifest(bundle: Path, edit: Any) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _drop(name: str) -> Any:
    return lambda m: m.update(files=[f for f in m["files"] if f["name"] != name])


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.update(model_file="../outside.onnx"), "field model_file"),
        (lambda m: m.update(model_file="unlisted.onnx"), "field model_file"),
        (lambda m: m.update(model_file=["model.onnx"]), "field model_file"),
        (lambda m: m.update(files=[]), "field files"),
        (_drop("signature.json"), "'signature.json' is not listed"),
        (_drop("selftest.json"), "'selftest.json' is not listed"),
        (lambda m: m["files"].append(dict(m["files"][0])), "listed twice"),
        (lambda m: m["files"][0].update(size=True), "files[0].size"),
        (lambda m: m["files"][0].update(name="../x"), "files[0].name"),
        (lambda m: m.update(model_digest="latest"), "field model_digest"),
        (lambda m: m.update(files={"model.onnx": {}}), "field files"),
    ],
    ids=[
        "model-file-outside",
        "model-file-unlisted",
        "model-file-not-a-name",
        "no-files",
        "signature-unchecked",
        "selftest-unchecked",
        "duplicate",
        "size-bool",
        "name-escapes",
        "digest",
        "files-not-a-list",
    ],
)
def test_manifest_fields_are_validated_before_anything_loads(
    edge_bundle: Path, tmp_path: Path, edit: Any, field: str
) -> None:
    bundle = _copy(edge_bundle, tmp_path)
    shutil.copy(edge_bundle / "model.onnx", tmp_path / "outside.onnx")  # a real model, unchecked
    shutil.copy(edge_bundle / "model.onnx", bundle / "unlisted.onnx")
    _edit_manifest(bundle, edit)
    with pytest.raises(EdgeBundleError, match="manifest.json: ") as caught:
        EdgeModel.load(bundle)
    assert field in str(caught.value)


def test_an_empty_file_list_fails_verification(edge_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(edge_bundle, tmp_path)
    _edit_manifest(bundle, lambda m: m.update(files=[]))
    with pytest.raises(EdgeBundleError, match="non-empty list"):
        verify(bundle)


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _announce(directory: Path, version: str, data: bytes, **fields: Any) -> UpdateManifest:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{version}.tar.gz").write_bytes(data)
    return UpdateManifest(
        version, hashlib.sha256(data).hexdigest(), 100, (directory / f"{version}.tar.gz").as_uri(), **fields
    )


def test_an_archive_that_unpacks_too_large_is_refused(edge_bundle: Path, tmp_path: Path) -> None:
    files = {p.name: p.read_bytes() for p in edge_bundle.iterdir()}
    files["padding.bin"] = bytes(8 * 1024 * 1024)  # 8 MiB of zeros: a few KiB compressed
    update = _announce(tmp_path / "pub", "v2", _archive(files))
    device = Device(tmp_path / "device", "dev-1", max_bundle_bytes=4 * 1024 * 1024)
    result = device.apply(update)
    assert result.outcome == "rejected" and "unpacks to more than 4194304 bytes" in result.detail
    assert list(device.bundles.iterdir()) == []


def test_an_archive_member_the_manifest_does_not_list_is_refused(edge_bundle: Path, tmp_path: Path) -> None:
    files = {p.name: p.read_bytes() for p in edge_bundle.iterdir()}
    files["extra.py"] = b"print('not checked by anything')\n"
    result = Device(tmp_path / "device", "dev-1").apply(_announce(tmp_path / "pub", "v2", _archive(files)))
    assert result.outcome == "rejected" and "extra.py not listed in its manifest" in result.detail


def test_the_update_manifest_size_bounds_the_fetch(edge_bundle: Path, tmp_path: Path) -> None:
    update = publish(edge_bundle, tmp_path / "pub", "v1", 100)
    assert update.size == Path(update.url.removeprefix("file://")).stat().st_size
    short = UpdateManifest(update.version, update.sha256, 100, update.url, update.model_digest, size=100)
    result = Device(tmp_path / "device", "dev-1").apply(short)
    assert result.outcome == "rejected" and "more than the 100 bytes allowed" in result.detail
    assert not any((tmp_path / "device" / "downloads").iterdir())
    small = Device(tmp_path / "device", "dev-1", max_archive_bytes=1000)
    result = small.apply(update)
    assert result.outcome == "rejected" and "more than this device takes (1000)" in result.detail


class _Endless(BaseHTTPRequestHandler):
    """Streams zeros with no Content-Length until the client stops reading (bounded at 64 MiB)."""

    sent: list[int]

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/announced":
            self.send_header("Content-Length", str(1 << 40))
        self.end_headers()
        block = bytes(1 << 16)
        try:
            for _ in range(1024):
                self.wfile.write(block)
                self.sent[0] += len(block)
        except OSError:
            pass


@pytest.fixture
def endless() -> Iterator[tuple[str, list[int]]]:
    sent = [0]
    handler = type("Handler", (_Endless,), {"sent": sent})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()


def test_an_endless_download_is_cut_at_the_device_limit(
    endless: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, sent = endless
    device = Device(tmp_path / "device", "dev-1", max_archive_bytes=1 << 20)
    result = device.apply(UpdateManifest("v7", "a" * 64, 100, f"{url}/stream"))
    assert result.outcome == "rejected" and "more than the 1048576 bytes allowed" in result.detail
    assert sent[0] < 32 * 1024 * 1024  # the device hung up; the server did not get to send its 64 MiB
    result = device.apply(UpdateManifest("v8", "a" * 64, 100, f"{url}/announced"))
    assert (
        result.outcome == "rejected"
        and f"{1 << 40} bytes announced, more than the 1048576 bytes" in result.detail
    )
    assert not any((tmp_path / "device" / "downloads").iterdir())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "ftp://example.invalid/v1.tar.gz"}, "field url"),
        ({"model_digest": "sha256:nope"}, "field model_digest"),
        ({"size": -1}, "field size"),
        ({"size": "12"}, "field size"),
        ({"rollout_percent": True}, "field rollout_percent"),
        ({"version": ["v1"]}, "field version"),
    ],
)
def test_malformed_update_manifest_fields(body: dict[str, Any], message: str) -> None:
    good = {"version": "v1", "sha256": "a" * 64, "rollout_percent": 5, "url": "file:///x"}
    with pytest.raises(UpdateError, match=message):
        UpdateManifest.from_json(json.dumps({**good, **body}))


def test_an_oversized_update_manifest_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "update.json"
    path.write_text(json.dumps({"version": "v1", "padding": "x" * 100_000}))
    with pytest.raises(UpdateError, match="larger than"):
        UpdateManifest.read(path)


def test_a_bundle_whose_digest_differs_from_the_announced_one_is_rejected(
    edge_bundle: Path, tmp_path: Path
) -> None:
    update = publish(edge_bundle, tmp_path / "pub", "v1", 100)
    lying = UpdateManifest(update.version, update.sha256, 100, update.url, "sha256:" + "e" * 64, update.size)
    result = Device(tmp_path / "device", "dev-1").apply(lying)
    assert result.outcome == "rejected" and "the update manifest says sha256:eee" in result.detail


# crashes and transient faults during an install ---------------------------------------------------


class Crash(BaseException):
    """The process dies here: nothing after this line of the install runs (no except, no finally of ours)."""


@pytest.fixture
def releases(edge_bundle: Path, tmp_path: Path) -> tuple[UpdateManifest, UpdateManifest]:
    return publish(edge_bundle, tmp_path / "v1", "v1", 100), publish(edge_bundle, tmp_path / "v2", "v2", 100)


def _self_test_faults(monkeypatch: pytest.MonkeyPatch, faults: list[BaseException]) -> list[int]:
    """Make the next self-tests raise `faults` in turn, then behave; returns a call counter."""
    real = EdgeModel.self_test
    calls = [0]

    def self_test(model: EdgeModel) -> Any:
        calls[0] += 1
        if faults:
            raise faults.pop(0)
        return real(model)

    monkeypatch.setattr(EdgeModel, "self_test", self_test)
    return calls


def test_a_crash_between_swap_and_self_test_is_finished_on_the_next_poll(
    releases: tuple[UpdateManifest, UpdateManifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = releases
    Device(tmp_path / "device", "dev-1").apply(v1)
    calls = _self_test_faults(monkeypatch, [Crash()])
    with pytest.raises(Crash):
        Device(tmp_path / "device", "dev-1").apply(v2)
    restarted = Device(tmp_path / "device", "dev-1")
    assert (restarted.current, restarted.pending) == ("v2", "v2")  # swapped, not verified
    result = restarted.apply(v2)
    assert result.outcome == "installed", result.detail  # not "up-to-date": the self-test ran now
    assert "self-test passed" in result.detail and "interrupted" in result.detail
    assert calls[0] == 2 and restarted.pending is None
    assert restarted.apply(v2).outcome == "up-to-date"


def test_a_bad_bundle_left_current_by_a_crash_is_rolled_back_before_it_serves(
    releases: tuple[UpdateManifest, UpdateManifest],
    edge_bundle: Path,
    bad_edge_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from test_edge_fleet import _variant, publish_unchecked

    v1, _ = releases
    Device(tmp_path / "device", "dev-1").apply(v1)
    wrong = _variant(edge_bundle, tmp_path, "wrong", (bad_edge_bundle / "model.onnx").read_bytes())
    v9 = publish_unchecked(wrong, tmp_path / "pub", "v9")
    _self_test_faults(monkeypatch, [Crash()])
    with pytest.raises(Crash):
        Device(tmp_path / "device", "dev-1").apply(v9)
    restarted = Device(tmp_path / "device", "dev-1")
    model = restarted.load()  # what the serving process does at start
    assert restarted.current == "v1" and model.self_test().passed
    assert restarted.apply(v9).outcome == "known-bad"


def test_a_transient_self_test_failure_is_retried_not_marked_bad(
    releases: tuple[UpdateManifest, UpdateManifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = releases
    device = Device(tmp_path / "device", "dev-1")
    device.apply(v1)
    _self_test_faults(monkeypatch, [OSError(errno.EIO, "Input/output error")])
    result = device.apply(v2)
    assert result.outcome == "rolled-back" and "transient" in result.detail and "(1/3)" in result.detail
    assert device.current == "v1"
    result = device.apply(v2)
    assert result.outcome == "installed", result.detail
    assert device.current == "v2"


def test_a_version_failing_transiently_every_time_is_given_up(
    releases: tuple[UpdateManifest, UpdateManifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = releases
    device = Device(tmp_path / "device", "dev-1")
    device.apply(v1)
    _self_test_faults(monkeypatch, [MemoryError() for _ in range(TRANSIENT_LIMIT)])
    outcomes = [device.apply(v2).outcome for _ in range(TRANSIENT_LIMIT + 1)]
    assert outcomes == ["rolled-back"] * TRANSIENT_LIMIT + ["known-bad"]
    assert device.current == "v1" and device.load().self_test().passed
