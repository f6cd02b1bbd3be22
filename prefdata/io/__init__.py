"""Reading, writing, importing and exporting tables (see tables, importers, exporters)."""

from prefdata.io.tables import read_table, sibling, write_table

__all__ = ["read_table", "sibling", "write_table"]
