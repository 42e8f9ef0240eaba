"""Touchscreen OR UI: a Flask kiosk app (``ui.app.create_app``) over the service's JSON API."""
