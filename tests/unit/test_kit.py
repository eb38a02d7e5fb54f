import gc
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from shopkit import errors, tuning
from shopkit.migrations import KIT_MIGRATIONS, MigrationError, MigrationSet, load_migrations
from shopkit.web import sane_request_id


def test_request_ids_are_kept_only_when_sane() -> None:
    assert sane_request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for insane in (None, "", "has space", "x" * 129, "new\nline", "-leading-dash", "é"):
        replaced = sane_request_id(insane)
        assert replaced != insane and len(replaced) == 32


def test_the_error_envelope_has_the_contract_fields() -> None:
    error = errors.ValidationFailed(details=[{"field": "email", "message": "bad"}])
    assert errors.error_body(error, "rid") == {
        "success": False,
        "error": "The request is not valid.",
        "code": "validation_error",
        "requestId": "rid",
        "details": [{"field": "email", "message": "bad"}],
    }
    assert "details" not in errors.error_body(errors.NotFound(), "rid")
    assert errors.TooManyRequests(0).headers == {"Retry-After": "1"}
    assert errors.DatabaseUnavailable().status == 503
    assert errors.DatabaseUnavailable().code == "database_unavailable"


def test_migrations_load_in_number_order(tmp_path: Path) -> None:
    (tmp_path / "002_b.sql").write_text("SELECT 2;")
    (tmp_path / "001_a.sql").write_text("-- only a comment\n")
    loaded = load_migrations(MigrationSet("t", tmp_path))
    assert [(m.track, m.version, m.name) for m in loaded] == [("t", 1, "001_a"), ("t", 2, "002_b")]
    assert not loaded[0].has_statements and loaded[1].has_statements


@pytest.mark.parametrize("bad", ["1_a.sql", "001-a.sql", "001_A.sql"])
def test_badly_named_migrations_are_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / bad).write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations(MigrationSet("t", tmp_path))


def test_two_migrations_with_one_number_are_refused(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations(MigrationSet("t", tmp_path))


def test_every_service_ships_valid_migrations() -> None:
    for service in ("auth", "orders", "tracking", "notifications"):
        assert load_migrations(MigrationSet(service, Path("services") / service / "migrations"))
    for kit_set in KIT_MIGRATIONS:
        assert load_migrations(kit_set)


def test_a_started_component_leaves_its_startup_objects_to_reference_counting() -> None:
    threshold = gc.get_threshold()
    try:
        tuning.tune_garbage_collector()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (tuning.YOUNG_GENERATION, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_component_takes_every_file_descriptor_the_system_allows() -> None:
    """Started with a small soft limit (a shell's 1024, say), a component raises it to the
    hard one: its caps on connections and streams are its own settings, not that accident."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("no finite hard limit above 256 here")
    child = subprocess.run(
        [sys.executable, "-c",
         "import resource; from shopkit.runner import allow_all_descriptors; "
         "allow_all_descriptors(); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        capture_output=True, text=True, check=True,
    )
    assert int(child.stdout) == hard
