"""Suite-wide ordering: the long end-to-end files first.

`make test` runs two xdist workers that take one file at a time in collection
order. The e2e files each start a whole federation (2-5 minutes); collected
last, as the folder order puts them, one of them could start when the other
worker had nothing left, and the suite waited on it alone. Longest first keeps
both workers busy to the end.
"""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: files stay whole
