"""prefdata: clean preference data, and models trained on it.

Tables flow between stages under the column contracts in `prefdata.schema`; every stage is
a plain function `stage(table, *, options) -> (table, report)`.
"""

__version__ = "0.1.0"
