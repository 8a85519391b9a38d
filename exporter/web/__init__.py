"""The HTTP surface: routes, pages, the server, and the exporter-toolkit web config (TLS, basic auth)."""
