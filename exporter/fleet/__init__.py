"""Many Rooms from one exporter: `--config.file` modules and allow-list, `/probe` requests, live reload."""
