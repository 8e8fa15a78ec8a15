"""rantune's command line, presets glue, sweeps and reports."""
