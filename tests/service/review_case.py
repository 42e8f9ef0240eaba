"""A finished job on a real CT behind the app `appliance serve` builds, for the model review and lesion API tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.print_case import case_grid, make_case
from svc_helpers import claimed_job

from appliance.commands.serve import create_web_app
from appliance.export.image import write_image_volume
from appliance.io.nifti import save_labelmap
from appliance.service.api_token import issue_api_token
from appliance.service.runtime import ApplianceService


def finished_job_box(service_factory: Callable[..., ApplianceService], tmp_path: Path,
                     shared_data: Path) -> dict[str, Any]:  # fmt: skip
    """A started service with one finished job on a real CT (labels, image, meshes) and an API client."""
    svc = service_factory()
    svc.start(receiver=False, importer=False)
    _study_uid, job_id, out = claimed_job(svc, shared_data, tmp_path, n=3)
    make_case(shared_data, out)
    volume, labelmap = case_grid(shared_data)
    save_labelmap(labelmap, out / "labels.nii.gz")
    (out / "structures.json").write_text(json.dumps([s.to_dict() for s in labelmap.structures]), encoding="utf-8")
    write_image_volume(volume, out / "image.nii.gz")
    svc.catalogue.update_job(job_id, state="done", output_dir=str(out), manifest_path=str(out / "manifest.json"))
    token = issue_api_token(svc.data_dir)
    app = create_web_app(svc.config, svc, api_token=token)
    return {"svc": svc, "job": job_id, "app": app, "client": app.test_client(), "volume": volume,
            "labelmap": labelmap, "headers": {"Authorization": f"Bearer {token}"}}
