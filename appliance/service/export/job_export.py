"""Export of one finished job: build SEG + Encapsulated STLs, de-identify, write them, optionally C-STORE them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from appliance import __version__
from appliance.audit import AuditLog
from appliance.config import ExportConfig, TlsConfig
from appliance.core import Volume, terminology
from appliance.export.image import IMAGE_KEY, LABELS_KEY, output_file
from appliance.io.nifti import load_volume
from appliance.privacy.deidentify import Deidentifier
from appliance.service.case_export import exported_case, job_manifest
from appliance.service.catalogue import Catalogue
from appliance.service.errors import DicomExportError
from appliance.service.export.scu import send_datasets
from appliance.service.export.seg import build_seg
from appliance.service.export.sources import labels_on_sources, source_series
from appliance.service.export.stl import build_encapsulated_stl
from appliance.service.storage import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportContext:
    """What a DICOM export needs from the service (built by :class:`~appliance.service.runtime.ApplianceService`).

    Attributes:
        settings: the ``export`` section of the configuration (destinations, manufacturer, model name).
        ae_title: our AE title, the calling AE title of C-STORE to a destination.
        tls: the mutual TLS files of the DICOM node (None: plain TCP).
        catalogue: the jobs and studies on the box.
        studies_dir: the folder of the stored studies (``<data_dir>/studies``).
        deidentifier: the box's de-identifier (configured options, box secret).
        device_serial_number: the box's non-secret identifier, written as Device Serial Number.
        audit: the audit trail every export is recorded in.
        study_hash: the study's keyed identity hash (what the audit trail records instead of the UID).
        revisions_dir: the folder of the jobs' revision stores (``<data_dir>/revisions``): a reviewed job is
            exported from the approved revision of each structure (:mod:`appliance.service.case_export`); None:
            always from the reconstruction outputs.
    """

    settings: ExportConfig
    ae_title: str
    tls: TlsConfig | None
    catalogue: Catalogue
    studies_dir: Path
    deidentifier: Deidentifier
    device_serial_number: str
    audit: AuditLog
    study_hash: Callable[[str], str]
    revisions_dir: Path | None = None


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote (and sent)."""

    files: list[Path]
    statuses: list[int]
    destination: str | None


def equipment(context: ExportContext) -> dict[str, str]:
    """Manufacturer, model, serial and software version of the appliance (never the scanner's)."""
    e = context.settings
    return {
        "manufacturer": e.manufacturer,
        "model_name": e.model_name,
        "device_serial_number": context.device_serial_number,
        "software_versions": __version__,
    }


def _finished(context: ExportContext, job_id: int) -> Path:
    job = context.catalogue.job(job_id)
    if job.state != "done" or not job.output_dir:
        raise DicomExportError(f"job {job_id} is {job.state}; only finished reconstructions can be exported")
    return Path(job.output_dir)


def build_export(context: ExportContext, job_id: int, case_dir: Path | None = None) -> list[Dataset]:
    """SEG + one Encapsulated STL per structure of a finished job, de-identified, in memory.

    ``case_dir``: the folder to take labels, structures and meshes from (the approved case of a reviewed job,
    :func:`~appliance.service.case_export.exported_case`); default the job's outputs.
    """
    job = context.catalogue.job(job_id)
    job_out = _finished(context, job_id)
    out = case_dir or job_out
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    labels_path = output_file(out, manifest, LABELS_KEY) or out / "labels.nii.gz"
    if not labels_path.is_file():
        raise DicomExportError(f"job {job_id} has no labels.nii.gz; it cannot be exported as SEG")
    labels = load_volume(labels_path, "SEG", "label")
    _check_image_grid(job_out, job_manifest(job_out), labels)
    sources = source_series(context.studies_dir / job.study_uid, labels)
    structures = _structures(out, manifest)
    equip = equipment(context)
    seg = build_seg(sources, labels_on_sources(labels, sources), structures, equip,
                    f"EDGE3D {manifest.get('preset', job.preset)}")  # fmt: skip
    objects: list[Dataset] = [seg]
    stl_series = generate_uid()
    for n, s in enumerate(structures, 1):
        stl_file = out / "meshes" / f"{s['name']}.stl"
        files = s.get("files") or {}
        if isinstance(files, dict) and files.get("stl"):
            stl_file = out / str(files["stl"])
        if stl_file.is_file():
            objects.append(build_encapsulated_stl(stl_file.read_bytes(), s, sources[0], equip, stl_series, n))
    deid = context.deidentifier
    return [_with_meta(deid.deidentify(o, keep=_GENERATED)) for o in objects]


#: Attributes whose content the appliance generated and checked (the job's patient-identifier scan of outputs).
_GENERATED = ("EncapsulatedDocument",)


def _with_meta(ds: Dataset) -> Dataset:
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


def _check_image_grid(out: Path, manifest: Mapping[str, Any], labels: Volume) -> None:
    """Refuse to export a label map that is not on the grid of the image it was made from (``files.image``)."""
    image_path = output_file(out, manifest, IMAGE_KEY)
    if image_path is None:
        return  # outputs made before the image was kept: the source series is the only reference
    image = nib.load(str(image_path))  # the header is enough: grid and affine
    if tuple(image.shape[:3]) != labels.shape or not np.allclose(image.affine, labels.ras_affine(), atol=1e-4):
        raise DicomExportError(
            f"the label map of {out.name} is not on the grid of its image volume ({image_path.name}); the outputs "
            "were changed after reconstruction: reconstruct the study again before exporting"
        )


def _structures(out: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    listed = manifest.get("structures") or []
    path = out / "structures.json"
    extra = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    by_name = {str(s["name"]): dict(s) for s in extra}
    for s in listed:
        by_name.setdefault(str(s["name"]), {}).update(s)
    described = [s for s in by_name.values() if "label" in s]
    for s in described:  # the exports' descriptions: display name and SNOMED CT code from the terminology table
        name = str(s["name"])
        s["display_name"] = terminology.display_name(name, "en")
        code = terminology.snomed(name)
        if code is not None:
            s["snomed"], s["snomed_meaning"] = code
    return described


def export_job(
    context: ExportContext, job_id: int, actor: str, destination_name: str | None = None,
    override_reason: str | None = None,
) -> ExportResult:
    """Write ``<output>/dicom/*.dcm`` for a job and, with a destination, C-STORE them; audited.

    A reviewed job is exported from the approved revision of each structure; with unapproved structures only when
    ``override_reason`` is given (:class:`~appliance.service.errors.UnapprovedStructures` otherwise).
    """
    job = context.catalogue.job(job_id)
    job_out = _finished(context, job_id)
    revisions: dict[str, Any] = {}
    if context.revisions_dir is None:
        objects = build_export(context, job_id)
    else:
        with exported_case(context.revisions_dir, job_id, job_out, actor, override_reason, context.audit,
                           context.study_hash(job.study_uid), "pacs" if destination_name else "dicom") as case_dir:
            objects = build_export(context, job_id, case_dir)
            if case_dir != job_out:
                case = json.loads((case_dir / "manifest.json").read_text(encoding="utf-8"))
                revisions = {str(s["name"]): s.get("revision") for s in case.get("structures", [])}
    folder = Path(job.output_dir or "") / "dicom"
    files = []
    for ds in objects:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        path = folder / f"{ds.Modality}_{ds.SOPInstanceUID}.dcm"
        atomic_write(path, buf.getvalue())
        files.append(path)
    statuses: list[int] = []
    dest = None
    if destination_name:
        matches = [d for d in context.settings.destinations if d.name == destination_name]
        if not matches:
            raise DicomExportError(f"no export destination named {destination_name!r} in the configuration")
        dest = matches[0]
        statuses = send_datasets(objects, dest, context.ae_title, context.tls)
    context.audit.append(
        actor, "export", context.study_hash(job.study_uid),
        {"job": job_id, "objects": [o.Modality for o in objects], "destination": destination_name,
         "statuses": [f"0x{s:04X}" for s in statuses], "revisions": revisions},
        "REQ-FUNC-312" if destination_name else "REQ-FUNC-310",
    )  # fmt: skip
    if statuses and any(s != 0 for s in statuses):
        raise DicomExportError(f"PACS {destination_name} refused some objects: {[hex(s) for s in statuses]}")
    return ExportResult(files, statuses, destination_name)
