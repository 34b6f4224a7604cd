"""Monitoring of what the recommender serves, shared by the pipeline, the CLI and the gateway.

- `drift`: population stability index (PSI) of key gold features and of the ranking scores, a
  reference window against one day; pure functions and the lake readers.
- `outcomes`: impressions, CTR and conversion per model version from the lake (impressions and
  the clicks and purchases attributed to them).
- `report`: the daily HTML report with plots and its JSON summary, under
  `$TOWERFLOW_HOME/reports/monitoring/`.
- `exporter`: the latest summary as Prometheus gauges (the gateway's `/metrics`).

It imports nothing from serving/ or jobs/; `exporter` imports only the standard library and
prometheus_client, so the slim gateway image can load it. docs/monitoring.md says what is measured.
"""

import re

#: A report summary's file name in the reports folder: the day it reports, `<YYYY-MM-DD>.json`.
SUMMARY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")
