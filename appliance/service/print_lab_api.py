"""The JSON API routes of the nurse's "Find on PACS" and the print lab's USB export, registered together.

``ui.app`` calls :func:`register_print_lab_api` right after registering the service API blueprint, so both
blueprints share its access rule (their ``before_request`` is the service API's own check).
"""

from __future__ import annotations

from flask import Flask

from appliance.service.lesions_api import lesions_api
from appliance.service.pacs.api import pacs_api
from appliance.service.print_export_api import usb_export_api
from appliance.service.revisions_api import review_api


def register_print_lab_api(app: Flask) -> None:
    """Register ``/api/pacs``, the USB export routes, the model review and the lesion routes on ``app`` once."""
    for blueprint in (pacs_api, usb_export_api, review_api, lesions_api):
        if blueprint.name not in app.blueprints:
            app.register_blueprint(blueprint)
