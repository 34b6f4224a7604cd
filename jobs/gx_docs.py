"""Great Expectations Data Docs that accumulate across processes (imported by GX by name, from the
site config `jobs.quality.Gates` writes; it imports GX at the top, so `jobs.quality` does not).

Each Airflow task validates in an ephemeral GX context of its own. GX's default index builder
deletes every page of the site that its context's stores do not know, so each task's Data Docs
removed the previous task's; `KeepingSiteIndexBuilder` leaves them, and the validation results
store on disk (see `Gates`) lets the index list them all.
"""

from __future__ import annotations

from typing import Any

from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder


class KeepingSiteIndexBuilder(DefaultSiteIndexBuilder):
    """`DefaultSiteIndexBuilder` that never deletes pages other contexts wrote."""

    def build(self, skip_and_clean_missing: bool = False, build_index: bool = True) -> Any:
        return super().build(skip_and_clean_missing=False, build_index=build_index)
