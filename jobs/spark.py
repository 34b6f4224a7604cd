"""The Spark session every job runs on.

On a laptop this is `local[*]` with the settings that worked on a 2-core, 24 GB machine
(PLATFORM-NOTES.md); on a cluster the master and any extra conf come from settings
(`TOWERFLOW_SPARK_MASTER`, `TOWERFLOW_SPARK_CONF`), so the same jobs run unchanged, e.g.::

    spark-submit --master spark://host:7077 -m jobs.etl --date 2025-01-03
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Applied before the caller's conf; every key can be overridden.
DEFAULT_CONF: dict[str, str] = {
    # Small machines: few shuffle partitions (AQE coalesces further), no UI threads.
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Lake timestamps are UTC microseconds; INT96 would turn into timestamp_ntz in Delta and
    # raise the table protocol (PLATFORM-NOTES.md).
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def get_spark(
    master: str = "local[*]",
    driver_memory: str = "4g",
    conf: Mapping[str, str] | None = None,
    app_name: str = "towerflow",
) -> SparkSession:
    """Start (or reuse) the process's Spark session.

    Args:
        master: Spark master URL: `local[*]`, `local[2]`, `spark://host:7077`, `yarn`, `k8s://...`.
        driver_memory: driver heap; only takes effect when this call starts the JVM.
        conf: extra Spark conf, applied last (e.g. `spark.jars.packages` for the Delta jars).
        app_name: name shown in the cluster's UI.

    Returns:
        The active session. Starting one takes 5-7 s, so start it once per process.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    builder = builder.config("spark.driver.memory", driver_memory)
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    log.info("spark %s on %s", spark.version, master)
    return spark


def delta_available(spark: SparkSession) -> bool:
    """True when Spark can read and write `format("delta")` (the delta-spark jars are loaded).

    Probes once per session by resolving the data source on a path that does not exist: a
    missing data source fails with DATA_SOURCE_NOT_FOUND, a present one with "path not found".
    """
    cached = getattr(spark, "_towerflow_delta", None)
    if cached is not None:
        return cached
    try:
        spark.read.format("delta").load("/nonexistent/towerflow-delta-probe").schema  # noqa: B018
        available = True
    except Exception as err:  # noqa: BLE001 - any failure other than "no such source" means present
        text = str(err)
        available = "DATA_SOURCE_NOT_FOUND" not in text and "Failed to find data source" not in text
    spark._towerflow_delta = available  # type: ignore[attr-defined]
    return available
