"""The synchronous launcher (for synchronous callers such as schemathesis): it serves, and it
stops every process even when the block fails."""

import pytest

from shopkit.bootstrap import ServiceDatabase
from tests.processes import COMPONENTS, answers_200, launched_system_sync

pytestmark = pytest.mark.system


def test_the_sync_launcher_serves_and_stops_everything_when_the_block_fails(
    databases: dict[str, ServiceDatabase], tmp_path_factory: pytest.TempPathFactory
) -> None:
    log_dir = tmp_path_factory.mktemp("sync-launch")
    with pytest.raises(RuntimeError, match="the test failed"), launched_system_sync(
        databases, log_dir
    ) as launched:
        assert answers_200(launched.gateway_url + "/api/ping")
        assert launched.restart("orders") == {"orders": 0}
        assert answers_200(launched.gateway_url + "/api/products")
        processes = launched.processes
        raise RuntimeError("the test failed")
    assert {name: p.returncode for name, p in processes.items()} == dict.fromkeys(COMPONENTS, 0)
    assert all((log_dir / f"{name}.log").stat().st_size for name in COMPONENTS)
