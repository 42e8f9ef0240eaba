"""Blueprints of the kiosk: auth (login, lock, language), nurse (inbox), surgeon (viewer, review), service."""
