"""Spark <-> Delta: Spark computes, delta-rs commits (ARCHITECTURE.md, "Lake").

Reads: a table's current snapshot (or a version) is read by Spark from the file list in its
Delta log, pruned by a SQL predicate on partition columns. Writes: Spark writes a result as
Parquet to a staging folder, pyarrow reads it (to check it) and delta-rs commits it in one
atomic commit through `Lake.write`, typically a predicate overwrite of the interval's days so a
rerun replaces them. (Collecting through Spark's `toArrow` is an option for small results.)
When the delta-spark jars are on Spark's classpath (a cluster), `engine="auto"` uses Spark's
native `format("delta")` for both instead; the tables are the same.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.lake import Lake, WriteMode

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType


def spark_type(arrow_type: pa.DataType) -> DataType:
    """The Spark SQL type of a lake column type (the few the schemas use)."""
    from pyspark.sql import types as T

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return T.StringType()
    if pa.types.is_int64(arrow_type):
        return T.LongType()
    if pa.types.is_int32(arrow_type):
        return T.IntegerType()
    if pa.types.is_float64(arrow_type):
        return T.DoubleType()
    if pa.types.is_float32(arrow_type):
        return T.FloatType()
    if pa.types.is_boolean(arrow_type):
        return T.BooleanType()
    if pa.types.is_date32(arrow_type):
        return T.DateType()
    if pa.types.is_timestamp(arrow_type):
        return T.TimestampType() if arrow_type.tz else T.TimestampNTZType()
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return T.ArrayType(spark_type(arrow_type.value_type))
    raise TypeError(f"no Spark type for lake column type {arrow_type}")


def spark_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, spark_type(f.type), True) for f in schema])


def conform(df: DataFrame, schema: pa.Schema) -> DataFrame:
    """`df` with exactly the schema's columns, in its order and types.

    Raises:
        ValueError: a schema column is missing from `df` (a bug in the transform).
    """
    from pyspark.sql import functions as F

    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"result lacks column(s) {', '.join(missing)} of the table schema")
    return df.select([F.col(f.name).cast(spark_type(f.type)).alias(f.name) for f in schema])


@dataclass(frozen=True)
class Written:
    """One commit: the table version it made and how many rows it wrote."""

    uri: str
    version: int | None
    rows: int


@dataclass
class SparkLake:
    """Spark reads and writes of the lake's Delta tables.

    Args:
        spark: the session.
        lake: delta-rs access to the same lake (commits, versions, history).
        engine: `delta-rs`, `spark` (native Delta, needs the jars), or `auto`.
        staging_dir: local scratch folder for `write_via="staging"` (default: the temp folder).
        write_via: how a Spark result reaches Python and delta-rs: `staging` (Spark writes
            Parquet, pyarrow reads or streams it; scales) or `arrow` (`toArrow` through the
            driver; capped by spark.driver.maxResultSize); see bench/etl.py.
    """

    spark: SparkSession
    lake: Lake
    engine: str = "auto"
    staging_dir: Path | None = None
    write_via: str = "staging"

    @property
    def native(self) -> bool:
        """True when Spark itself reads and writes Delta (`format("delta")`)."""
        if self.engine == "delta-rs":
            return False
        from jobs.spark import delta_available

        available = delta_available(self.spark)
        if self.engine == "spark" and not available:
            raise RuntimeError(
                'delta_engine is "spark" but Spark has no Delta data source; add the delta-spark '
                'jars (spark.jars.packages=io.delta:delta-spark_2.13:4.1.0) or use "delta-rs"'
            )
        return available

    # ------------------------------------------------------------------------------------ read

    def read(self, uri: str, schema: pa.Schema, where: str | None = None, version: int | None = None) -> DataFrame:
        """The table's snapshot as a DataFrame with `schema`'s columns; empty if no table yet.

        Args:
            uri: table URI.
            schema: the table's lake schema (types of the columns to read).
            where: SQL predicate, e.g. `event_date >= '2025-01-01'`; it prunes files by
                partition values and then filters rows.
            version: a past table version (time travel); None for the current one.
        """
        if self.native:  # pragma: no cover - needs the delta-spark jars
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            try:
                df = reader.load(uri)
            except Exception:  # noqa: BLE001 - no table yet reads as empty
                return self.empty(schema)
            df = conform(df, schema)
            return df.where(where) if where else df
        table = self.lake.table(uri, version)
        if table is None:
            return self.empty(schema)
        files = table.file_uris(file_pruning_predicate=where) if where else table.file_uris()
        if not files:
            return self.empty(schema)
        df = (
            self.spark.read.schema(spark_schema(schema))
            .option("basePath", uri)  # keeps the partition column
            .parquet(*files)
        )
        return df.where(where) if where else df

    def empty(self, schema: pa.Schema) -> DataFrame:
        return self.spark.createDataFrame([], spark_schema(schema))

    # ----------------------------------------------------------------------------------- write

    def collect(self, df: DataFrame, schema: pa.Schema) -> pa.Table:
        """Compute `df` into an Arrow table with exactly the lake schema.

        With `write_via="staging"` (default) Spark writes Parquet to a scratch folder and pyarrow
        reads it back: the result never passes through the driver JVM, whose result size is
        capped (`spark.driver.maxResultSize`, 1 GiB: about 9M silver rows). `arrow` uses Spark
        4's `toArrow`, fine for small results.
        """
        import pyarrow.dataset as ds

        if self.write_via != "staging":
            return conform(df, schema).toArrow().cast(schema)
        folder = self._scratch()
        try:
            conform(df, schema).write.mode("overwrite").parquet(str(folder))
            return ds.dataset(str(folder), format="parquet").to_table().cast(schema)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _scratch(self) -> Path:
        import tempfile

        root = self.staging_dir or Path(tempfile.gettempdir()) / "towerflow-staging"
        return root / uuid.uuid4().hex

    def write(
        self,
        df: DataFrame | pa.Table,
        uri: str,
        schema: pa.Schema,
        *,
        predicate: str | None = None,
        partition_by: list[str] | None = None,
        mode: WriteMode = "overwrite",
        metadata: Mapping[str, Any] | None = None,
    ) -> Written:
        """Commit a result to a Delta table in one atomic commit.

        Args:
            df: a Spark result, or an Arrow table already collected (e.g. to validate it first).
            uri: table URI.
            schema: the table's lake schema; the data is cast to it.
            predicate: with `mode="overwrite"`, replace only rows matching it (one interval), so a
                rerun replaces instead of duplicating; every written row must match it.
            partition_by: partition columns.
            mode: `overwrite` or `append`.
            metadata: recorded in the commit (input table versions, interval, row counts).
        """
        meta = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}
        if self.native and not isinstance(df, pa.Table):  # pragma: no cover - needs the jars
            rows = df.count()
            writer = conform(df, schema).write.format("delta").mode(mode)
            if predicate:
                writer = writer.option("replaceWhere", predicate)
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.option("userMetadata", json.dumps(meta)).save(uri)
            return Written(uri, self.lake.version(uri), rows)
        if isinstance(df, pa.Table):
            data: pa.Table | pa.RecordBatchReader = df.cast(schema)
            rows = len(df)
        elif self.write_via == "staging":
            return self._write_staged(df, uri, schema, predicate, partition_by, mode, meta)
        else:
            data = self.collect(df, schema)
            rows = len(data)
        version = self.lake.write(uri, data, mode=mode, partition_by=partition_by, predicate=predicate, metadata=meta)
        return Written(uri, version, rows)

    def _write_staged(self, df, uri, schema, predicate, partition_by, mode, meta) -> Written:
        """Spark writes Parquet to a local staging folder; delta-rs streams it into the table."""
        import pyarrow.dataset as ds

        folder = self._scratch()
        try:
            conform(df, schema).write.mode("overwrite").parquet(str(folder))
            dataset = ds.dataset(str(folder), format="parquet")
            rows = dataset.count_rows()
            reader = dataset.scanner(batch_size=256_000).to_reader().cast(schema)
            version = self.lake.write(
                uri, reader, mode=mode, partition_by=partition_by, predicate=predicate, metadata=meta
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return Written(uri, version, rows)


def commit_metadata(uri: str, lake: Lake, version: int | None = None) -> dict[str, str]:
    """The custom metadata of a table's commit (the latest, or `version`); {} if none."""
    table = lake.table(uri)
    if table is None:
        return {}
    for entry in table.history():
        if version is None or entry.get("version") == version:
            return {k: v for k, v in entry.items() if k.startswith("towerflow.")}
    return {}
