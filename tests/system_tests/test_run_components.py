"""scripts/run-components, which `make run` and the bench start the components with: every
Procfile line at once, each writing to the terminal itself; Ctrl-C or SIGTERM, or one component
exiting, stops them all gracefully."""

import signal
import subprocess
from pathlib import Path

import pytest

from tests.processes import ROOT, poll

pytestmark = pytest.mark.system
RUNNER = ROOT / "scripts" / "run-components"
# A component that says when it is up and when SIGTERM stopped it.
PATIENT = ("patient: trap 'echo patient-stopped >> {out}; exit 0' TERM;"
           " echo patient-up >> {out}; echo patient-says-hi; sleep 60 & wait")


def started(procfile: Path, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([RUNNER, procfile], stdout=open(tmp_path / "terminal", "wb"),
                            stderr=subprocess.DEVNULL, cwd=tmp_path)


def test_one_component_exiting_stops_the_others_and_its_status_is_the_runner_s(
    tmp_path: Path,
) -> None:
    out = tmp_path / "events"
    procfile = tmp_path / "Procfile"
    procfile.write_text(PATIENT.format(out=out) + "\n"
                        f"quitter: until grep -q patient-up {out} 2>/dev/null; do sleep 0.05;"
                        " done; exit 3\n")
    runner = started(procfile, tmp_path)
    assert runner.wait(timeout=30) == 3
    assert out.read_text().split() == ["patient-up", "patient-stopped"]
    # The component's own output reached the terminal, with nothing in between.
    assert "patient-says-hi" in (tmp_path / "terminal").read_text().split()


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_runner_stops_every_component_gracefully(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    out = tmp_path / "events"
    procfile = tmp_path / "Procfile"
    procfile.write_text(PATIENT.format(out=out) + "\n"
                        + PATIENT.format(out=out).replace("patient", "other") + "\n")
    runner = started(procfile, tmp_path)
    poll(lambda: out.exists() and len(out.read_text().split()) == 2, 15, "both components up")
    runner.send_signal(sig)
    assert runner.wait(timeout=30) == status
    assert sorted(out.read_text().split()) == [
        "other-stopped", "other-up", "patient-stopped", "patient-up"]
