"""Importers for the public preference-data formats users hold.

Each importer is `import_<format>(path, *, options) -> Imported`: the tables it makes
(pairs, annotations, kto, prompts), the source rows that did not become data (with a
reason), and a report of counts. Nothing is dropped silently.
"""
