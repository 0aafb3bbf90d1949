"""The fast lane (``portal.app.FastLane``) finds the login's JSON endpoints before
the router does: it must pick exactly what the router would have picked."""

from starlette.routing import Match, Route

from portal.app import EXCEPTION_HANDLERS, FastLane, Site, create_app
from portal.scan.qrapi import Direct, Events

SAMPLE = {"StringConvertor": "T" * 32, "PathConvertor": "a/b.txt", "IntegerConvertor": "7",
          "FloatConvertor": "1.5", "UUIDConvertor": "2f1e6c43-5b8e-4d0c-9a55-0e0f7d8b1a11"}  # fmt: skip


def sample_path(route) -> str:
    values = {k: SAMPLE[type(c).__name__] for k, c in route.param_convertors.items()}
    return route.path_format.format(**values)


def router_pick(site: Site, scope: dict):
    for r in site.router.routes:
        match, child = r.matches(scope)
        if match == Match.FULL:
            return r, child.get("path_params", {})
    return None, {}


def test_the_fast_lane_picks_what_the_router_would(settings_factory):
    app = create_app(settings_factory())
    sites = [r for r in app.routes if isinstance(r, Site)]
    assert {s.site for s in sites} == {"apex", "pool", "host_error"}
    lane = FastLane(app, sites, EXCEPTION_HANDLERS)
    taken = set()
    for site in sites:
        for route in site.router.routes:
            path = sample_path(route)
            for method in sorted(getattr(route, "methods", None) or {"GET", "POST"}):
                scope = {"type": "http", "path": path, "method": method, "portal_site": site.site}
                picked, params = lane.route(scope)
                expected, expected_params = router_pick(site, scope)
                if picked is not None:  # never another route than the router's
                    assert picked is expected, (site.site, method, path)
                    assert params == expected_params
                    taken.add((site.site, picked.path))
                elif isinstance(getattr(expected, "endpoint", None), Direct | Events):
                    raise AssertionError(f"the lane missed {site.site} {method} {path}")
    # Every login request goes by the lane: the creation, status reads, the
    # stream and the exchange on pool hosts, the mini program's three calls on
    # the apex host.
    assert taken >= {
        ("pool", "/api/qrcode"),
        ("pool", "/api/qrcode/{ticket}/status"),
        ("pool", "/api/qrcode/{ticket}/events"),
        ("pool", "/api/qrcode/{ticket}/exchange"),
        ("apex", "/api/mp/session"),
        ("apex", "/api/mp/tickets/{ticket}/scan"),
        ("apex", "/api/mp/tickets/{ticket}/confirm"),
    }
    # Only those: a page, or a route wrapped by Starlette, is the router's.
    assert all(
        isinstance(r.endpoint, Direct | Events)
        for s in sites
        for r in s.router.routes
        if isinstance(r, Route) and (s.site, r.path) in taken
    )
