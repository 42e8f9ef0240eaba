"""Which body region an image shows, from its recorded tags or, failing those, from the image itself.

Regions are coarse words a model pack's ``body_region`` also uses: ``head``, ``neck``, ``chest``, ``abdomen``,
``pelvis``, ``extremity``; a pack may also declare ``trunk`` (chest, abdomen, pelvis), ``wholebody`` or ``any``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.core import Volume

#: Tag words (BodyPartExamined, series description, lower case, split on spaces, '_' and '-') -> region.
REGION_WORDS: dict[str, str] = {
    "head": "head", "brain": "head", "skull": "head", "cerebrum": "head", "neuro": "head", "sinus": "head",
    "neck": "neck", "cervical": "neck", "larynx": "neck", "thyroid": "neck",
    "chest": "chest", "thorax": "chest", "thoracic": "chest", "lung": "chest", "lungs": "chest", "heart": "chest",
    "cardiac": "chest", "breast": "chest", "pulmonary": "chest", "cta": "chest",
    "abdomen": "abdomen", "abd": "abdomen", "liver": "abdomen", "kidney": "abdomen", "renal": "abdomen",
    "pancreas": "abdomen", "upper": "abdomen", "abdominal": "abdomen",
    "pelvis": "pelvis", "pelvic": "pelvis", "hip": "pelvis", "prostate": "pelvis", "bladder": "pelvis",
    "knee": "extremity", "ankle": "extremity", "foot": "extremity", "wrist": "extremity", "hand": "extremity",
    "elbow": "extremity", "shoulder": "extremity", "leg": "extremity", "arm": "extremity",
    "wholebody": "wholebody", "whole": "wholebody", "body": "wholebody", "trunk": "trunk", "tap": "trunk",
    "cap": "trunk",
}
#: Pack regions that cover several image regions.
COVERS: dict[str, frozenset[str]] = {
    "any": frozenset({"head", "neck", "chest", "abdomen", "pelvis", "extremity", "trunk", "wholebody", "unknown"}),
    "wholebody": frozenset({"head", "neck", "chest", "abdomen", "pelvis", "trunk", "wholebody", "unknown"}),
    "trunk": frozenset({"chest", "abdomen", "pelvis", "trunk"}),
}
_TAG_KEYS = ("body_part", "BodyPartExamined", "description", "series_description", "SeriesDescription")


@dataclass(frozen=True)
class BodyRegion:
    """The regions an image shows and where that came from (``tags``, ``image`` or ``unknown``)."""

    regions: frozenset[str]
    source: str
    evidence: str

    def fits(self, pack_region: str) -> bool:
        """Whether a pack made for ``pack_region`` covers this image."""
        region = pack_region.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        covered = COVERS.get(region, frozenset({region}))
        return bool(self.regions) and self.regions <= covered


def _words(text: str) -> list[str]:
    return text.lower().replace("_", " ").replace("-", " ").replace("/", " ").replace(",", " ").split()


def region_from_text(text: str) -> BodyRegion | None:
    """Regions a text names (BodyPartExamined, study or series description), or ``None`` when it names none."""
    found = {REGION_WORDS[w] for w in _words(text) if w in REGION_WORDS}
    if not found:
        return None
    return BodyRegion(frozenset(found), "tags", text.strip())


def region_from_tags(volume: Volume) -> BodyRegion | None:
    """Regions named in the volume's recorded tags, or ``None`` when none are named."""
    return region_from_text(" ".join(str(volume.metadata.get(key, "")) for key in _TAG_KEYS))


def region_from_ct(volume: Volume) -> BodyRegion:
    """Regions of a CT in HU from its content: lung air inside the body means chest; a body cross-section under
    300 cm^2 with a bony ring around soft tissue means head; otherwise abdomen/pelvis (``trunk`` below the lungs)."""
    array = np.asarray(volume.array)
    step = max(1, round(4.0 / max(volume.spacing[0], 1e-3)))
    sample = array[::step, ::step, :].astype(np.float32)
    pixel_cm2 = float(volume.spacing[0] * volume.spacing[1] * step * step) / 100.0
    body = sample > -500
    body_area = body.sum(axis=(0, 1)) * pixel_cm2
    slices = max(int((body_area > 20).sum()), 1)
    from scipy import ndimage

    lung_slices = 0
    head_slices = 0
    for k in range(sample.shape[2]):
        if body_area[k] <= 20:
            continue
        inside = ndimage.binary_fill_holes(body[:, :, k])
        air_inside = inside & (sample[:, :, k] < -400)
        if air_inside.sum() * pixel_cm2 > 0.05 * body_area[k]:
            lung_slices += 1
        bone = sample[:, :, k] > 300
        if body_area[k] < 300 and bone.sum() * pixel_cm2 > 0.08 * body_area[k]:
            head_slices += 1
    regions: set[str] = set()
    if lung_slices >= 0.1 * slices:
        regions.add("chest")
    if head_slices >= 0.5 * slices:
        regions.add("head")
    if lung_slices < 0.9 * slices and head_slices < 0.5 * slices:
        regions.add("abdomen")
    evidence = f"{lung_slices} of {slices} slices with lung air, {head_slices} head-sized with a bony ring"
    return BodyRegion(frozenset(regions), "image", evidence)


def body_region(volume: Volume) -> BodyRegion:
    """The image's regions: from tags when they name one, else (CT in HU) from the image, else unknown."""
    tagged = region_from_tags(volume)
    if tagged is not None:
        return tagged
    if volume.modality.upper() == "CT" and volume.units == "HU":
        return region_from_ct(volume)
    return BodyRegion(frozenset({"unknown"}), "unknown", "no region tag and no image rule for this modality")


__all__ = ["COVERS", "REGION_WORDS", "BodyRegion", "body_region", "region_from_ct", "region_from_tags",
           "region_from_text"]
