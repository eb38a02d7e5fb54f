"""Latency under load, as a picture: open-loop load at rising offered rates through ours, nginx
`auth_request` and the ceiling (a bare proxy hop in front of the same service), each up to
where it saturates; p50 and p99 against the offered rate, on one chart."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.load import Sample, hey
from bench.processes import BARE_PROXY, BARE_PROXY_PORTS, NGINX_PORT, PORTS
from bench.shop import Customer, signed

PATH = "/api/users/me"
FIRST_RATE = 200
STEP = 1.5
MAX_STEPS = 14
STEP_SECONDS = 3
# Saturated: answers fall behind the offered rate, or the p99 passes this.
SATURATED_P99_MS = 500
KEPT_SHARE = 0.9


@dataclass(frozen=True)
class Point:
    offered: float
    sample: Sample


def saturated(point: Point) -> bool:
    s = point.sample
    return (s.rps < KEPT_SHARE * point.offered or s.p99_ms > SATURATED_P99_MS
            or s.non_2xx > 0.01 * point.offered * STEP_SECONDS)


def latency_curves(customer: Customer) -> dict[str, list[Point]]:
    bearer = {"Authorization": f"Bearer {customer.token}"}
    targets: dict[str, tuple[str, Callable[[], dict[str, str]]]] = {
        "gateway": (f"http://127.0.0.1:{PORTS['gateway']}{PATH}", lambda: bearer),
        "nginx auth_request": (f"http://127.0.0.1:{NGINX_PORT}{PATH}", lambda: bearer),
        f"ceiling: {BARE_PROXY}": (f"http://127.0.0.1:{BARE_PROXY_PORTS['auth']}{PATH}",
                                   lambda: signed(customer, "auth", PATH)),
    }
    print(f"latency against offered load, GET {PATH}, {STEP_SECONDS} s a step", flush=True)
    curves = {}
    for name, (url, headers) in targets.items():
        points: list[Point] = []
        rate = FIRST_RATE
        for _ in range(MAX_STEPS):
            points.append(Point(rate, hey(url, headers(), rate, STEP_SECONDS)))
            if saturated(points[-1]):
                break
            rate = round(rate * STEP)
        curves[name] = points
        print(f"  {name:<34} " + ", ".join(
            f"{p.offered:,.0f}: p99 {p.sample.p99_ms:.1f}" for p in points), flush=True)
    return curves


def draw(curves: dict[str, list[Point]], image: Path) -> None:
    """p50 (dashed) and p99 (solid) of each path against the offered rate, as a PNG."""
    import matplotlib  # the bench alone draws; nothing else loads matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 5.5), dpi=110)
    for (name, points), colour in zip(curves.items(), ("C0", "C3", "C2"), strict=False):
        offered = [p.offered for p in points]
        axes.plot(offered, [p.sample.p99_ms for p in points], "-o", color=colour,
                  label=f"{name}, p99", markersize=4)
        axes.plot(offered, [p.sample.p50_ms for p in points], "--", color=colour,
                  label=f"{name}, p50")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered load, requests per second (open loop, hey)")
    axes.set_ylabel("latency, ms")
    axes.set_title(f"GET {PATH}: latency against offered load, up to saturation")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(image)
    pyplot.close(figure)
