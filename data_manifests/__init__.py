"""Protocol specs, one TOML file per dataset (read by reid_eval.datasets)."""
