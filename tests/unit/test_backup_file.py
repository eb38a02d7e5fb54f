"""The backup file (shopkit.backup): what a restore accepts, and each way a file is refused
before anything is touched; and the shop's part of a broker's definitions."""

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.bootstrap import SUBSCRIPTIONS
from shopkit.backup import (
    BROKER,
    DUMP,
    MANIFEST,
    MANIFEST_SIGNATURE,
    BadBackup,
    DatabasePart,
    Manifest,
    digest_of,
    signature,
    unpack,
    write_archive,
)
from shopkit.broker_access import ShopBroker, moved_to, shop_definitions
from shopkit.topology import declared

KEY = b"the shop's backup key"


def _backup(tmp_path: Path) -> tuple[Path, Manifest]:
    members = {DUMP: tmp_path / "dump", BROKER: tmp_path / "broker"}
    members[DUMP].write_bytes(bytes(range(256)) * 100)
    members[BROKER].write_text('{"queues": []}')
    now = datetime.now(UTC)
    manifest = Manifest(
        created_at=now, vhost="shop",
        database=DatabasePart(name="shop", schemas={"auth": "shop_auth"},
                              server_version="15.20", clock=now),
        members={name: digest_of(path) for name, path in members.items()})
    return write_archive(tmp_path / "backups", "shop-1", manifest, members, KEY), manifest


def _rewritten(source: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """`source` written again with members replaced (or left out, for None)."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for info in old.getmembers():
            data = change.get(info.name, _member(old, info.name))
            if data is not None:
                info.size = len(data)
                new.addfile(info, io.BytesIO(data))
    return target


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None
    return member.read()


def test_a_whole_backup_unpacks_to_what_was_written(tmp_path: Path) -> None:
    path, manifest = _backup(tmp_path)
    assert path.name == "shop-1.tar" and path.stat().st_mode & 0o777 == 0o600
    into = tmp_path / "into"
    into.mkdir()
    assert unpack(path, into, KEY) == manifest
    assert (into / DUMP).read_bytes() == (tmp_path / "dump").read_bytes()
    # A second backup of the same second gets a name of its own.
    assert _backup(tmp_path)[0].name == "shop-1-2.tar"


def _refused(path: Path, tmp_path: Path) -> str:
    into = tmp_path / "refused"
    into.mkdir(exist_ok=True)
    with pytest.raises(BadBackup) as refusal:
        unpack(path, into, KEY)
    return str(refusal.value)


def test_a_member_unlike_its_manifest_is_refused(tmp_path: Path) -> None:
    path, _ = _backup(tmp_path)
    changed = _rewritten(path, tmp_path / "changed.tar", {BROKER: b'{"queues": [1]}'})
    assert "is corrupt: broker.json is not what its manifest says" in _refused(changed,
                                                                                tmp_path)


def test_a_manifest_unlike_its_signature_is_refused(tmp_path: Path) -> None:
    path, _ = _backup(tmp_path)
    with tarfile.open(path) as tar:
        text = _member(tar, MANIFEST).replace(b'"shop"', b'"shop2"')
    changed = _rewritten(path, tmp_path / "changed.tar", {MANIFEST: text})
    assert "its manifest does not match" in _refused(changed, tmp_path)


def test_a_backup_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    """Checksums anyone could recompute prove nothing: only the shop's key signs a backup."""
    path, _ = _backup(tmp_path)
    with tarfile.open(path) as tar:
        text = _member(tar, MANIFEST)
    forged = _rewritten(path, tmp_path / "forged.tar", {
        MANIFEST_SIGNATURE: signature(b"someone else's key", text)})
    assert "signed with another key" in _refused(forged, tmp_path)


def test_a_manifest_of_another_version_is_refused(tmp_path: Path) -> None:
    path, _ = _backup(tmp_path)
    with tarfile.open(path) as tar:
        text = _member(tar, MANIFEST).replace(b'"version": 1', b'"version": 2')
    changed = _rewritten(path, tmp_path / "changed.tar", {
        MANIFEST: text, MANIFEST_SIGNATURE: signature(KEY, text)})
    assert "a manifest this version does not read" in _refused(changed, tmp_path)


@pytest.mark.parametrize("left_out", [BROKER, MANIFEST_SIGNATURE])
def test_a_backup_missing_a_member_is_refused(tmp_path: Path, left_out: str) -> None:
    path, _ = _backup(tmp_path)
    changed = _rewritten(path, tmp_path / "changed.tar", {left_out: None})
    assert left_out in _refused(changed, tmp_path)


def test_a_file_cut_anywhere_is_refused(tmp_path: Path) -> None:
    path, _ = _backup(tmp_path)
    whole = path.read_bytes()
    for size in (0, 100, len(whole) // 2, len(whole) - 1024, len(whole) - 1):
        cut = tmp_path / f"cut-{size}.tar"
        cut.write_bytes(whole[:size])
        assert "cut short" in _refused(cut, tmp_path), size


def test_the_shop_s_definitions_are_its_own_in_its_vhost() -> None:
    """The vhost may be `/`, shared with another application: only the shop's part is kept."""
    queues, exchanges = declared(SUBSCRIPTIONS)
    shop = ShopBroker("/", frozenset({"shop_orders"}), frozenset(queues), frozenset(exchanges))
    everything = {
        "users": [{"name": "shop_orders", "password_hash": "h"}, {"name": "guest"},
                  {"name": "other_app"}],
        "vhosts": [{"name": "/"}, {"name": "elsewhere"}],
        "permissions": [{"user": "shop_orders", "vhost": "/"},
                        {"user": "other_app", "vhost": "/"},
                        {"user": "shop_orders", "vhost": "elsewhere"}],
        "topic_permissions": [{"user": "shop_orders", "vhost": "/"}],
        "queues": [{"name": "tracking.orders", "vhost": "/"},
                   {"name": "gateway.revocations.x1", "vhost": "/"},
                   {"name": "other_app.jobs", "vhost": "/"},
                   {"name": "tracking.orders.dlq", "vhost": "elsewhere"}],
        "exchanges": [{"name": "shop.events", "vhost": "/"}, {"name": "other", "vhost": "/"}],
        "bindings": [{"source": "shop.events", "destination": "tracking.orders",
                      "destination_type": "queue", "vhost": "/"},
                     {"source": "shop.events", "destination": "gateway.revocations.x1",
                      "destination_type": "queue", "vhost": "/"},
                     {"source": "other", "destination": "other_app.jobs",
                      "destination_type": "queue", "vhost": "/"}],
        "policies": [{"name": "shop-limits", "pattern": "^tracking\\.", "vhost": "/"},
                     {"name": "other-limits", "pattern": "^other_app\\.", "vhost": "/"}],
        "parameters": [{"component": "shovel", "vhost": "/",
                        "value": {"src-uri": "amqp://u:pw@x"}},
                       {"component": "vhost-limits", "vhost": "/"}],
    }
    kept = shop_definitions(everything, shop)
    assert kept["users"] == [{"name": "shop_orders", "password_hash": "h"}]
    assert kept["vhosts"] == [{"name": "/"}]
    assert kept["permissions"] == [{"user": "shop_orders", "vhost": "/"}]
    assert [q["name"] for q in kept["queues"]] == ["tracking.orders"]
    assert [e["name"] for e in kept["exchanges"]] == ["shop.events"]
    assert [b["destination"] for b in kept["bindings"]] == ["tracking.orders"]
    assert [p["name"] for p in kept["policies"]] == ["shop-limits"]
    # A shovel's URI may hold a password in clear: left out.
    assert [p["component"] for p in kept["parameters"]] == ["vhost-limits"]
    moved = moved_to(kept, "restored")
    assert {item["vhost"] for key in ("queues", "bindings", "permissions", "policies")
            for item in moved[key]} == {"restored"}
    assert moved["vhosts"] == [{"name": "restored"}]


def test_a_member_that_is_not_a_plain_file_is_refused(tmp_path: Path) -> None:
    """A link, or a sparse member whose holes would unpack to far more than the file holds."""
    crafted = tmp_path / "crafted.tar"
    with tarfile.open(crafted, "w") as tar:
        link = tarfile.TarInfo(DUMP)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert "which no backup holds" in _refused(crafted, tmp_path)
