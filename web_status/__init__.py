"""The read-only status page and JSON API: :func:`web_status.app.create_app`."""
