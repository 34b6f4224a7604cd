"""The lake for the jobs: `Lake` lives in towerflow/lake.py, shared with the gateway (impressions)."""

from towerflow.lake import Lake, WriteMode

__all__ = ["Lake", "WriteMode"]
