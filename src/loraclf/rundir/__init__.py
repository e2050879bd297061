"""Stage 4, the run folder: its layout, atomic writes, readers, versions, the adapter's card and the report."""
