"""Suite-wide ordering: the long end-to-end files first, longest first.

`make test` runs two xdist workers that take one file at a time in collection
order (`--no-loadscope-reorder`; xdist's default order puts files with many
tests first, so the e2e files, few tests each but 2-7 minutes, came last and
one worker finished them alone). Longest first keeps both workers busy to the
end. The order is by measured wall time (`pytest --durations`), longest first.
"""

from __future__ import annotations

LONGEST_FIRST = (
    "tests/e2e/test_fault_tolerance.py",
    "tests/e2e/test_guide_walkthrough.py",
    "tests/e2e/test_server_restart.py",
    "tests/e2e/test_federation.py",
    "tests/e2e/test_secure_aggregation.py",
    "tests/e2e/test_site_approval.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        if path in LONGEST_FIRST:
            return LONGEST_FIRST.index(path)
        return len(LONGEST_FIRST) + (item.get_closest_marker("e2e") is None)

    items.sort(key=rank)  # stable: a file's tests stay together and in order
