"""The report: metrics and statistics of the records, tables, figures, and one module per
section (beyond the paper, progressive offloading, degraded uplinks); writer.py writes the files."""
