"""Side-by-side comparison of aggregation strategies: run records, report, plots."""
