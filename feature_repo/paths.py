"""Where the feature repository's sources live: the one place a table name becomes a path.

Paths come from `towerflow.settings` (TOWERFLOW_HOME or TOWERFLOW_LAKE_URI) when the repository is
imported, so nothing machine-specific is committed. `jobs.feature_store.definitions` re-points
every source at the lake of the settings it is given, so one process can serve several homes.
"""

from __future__ import annotations

#: Tag on every batch source naming its lake table as `<layer>/<table>`.
TABLE_TAG = "towerflow.table"


def table_path(layer: str, table: str) -> str:
    """The Delta table URI for `<layer>/<table>` under the configured lake."""
    from towerflow.settings import get_settings

    return get_settings().table_uri(layer, table)
