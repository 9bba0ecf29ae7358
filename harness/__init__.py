"""txt2sql: a text-to-SQL evaluation harness for PostGIS.

The pipeline, one package per stage:
benchmark -> db -> prompts -> models -> sql (extraction) -> diagnose -> db (execution)
-> scoring -> report -> gate.
"""

__version__ = "0.1.0"
