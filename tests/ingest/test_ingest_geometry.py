"""Geometry QA on synthetic stacks: ordering, spacing, gaps, duplicates, tilt sign, regular grid, pixel rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.core import Instance, Severity
from appliance.ingest.geometry import analyse_stack, regular_grid
from appliance.ingest.pixels import _fits_bits, rescale

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _stack(zs: list[float], iop: tuple[float, ...] = AXIAL, shift_y: float = 0.0,
           tags: dict[str, Any] | None = None) -> list[Instance]:
    base = {"pixel_spacing": (0.5, 0.5), "rows": 4, "columns": 4}
    base.update(tags or {})
    return [Instance(Path(f"s{k}.dcm"), f"1.2.{k}", None, (10.0, -20.0 + shift_y * z, z), iop, base)  # type: ignore[arg-type]
            for k, z in enumerate(zs)]


@pytest.mark.req("REQ-ACQ-001")
def test_order_and_affine_from_positions_not_file_order() -> None:
    insts = _stack([4.0, 0.0, 2.0, 6.0])
    g = analyse_stack(insts)
    assert g.order == [1, 2, 0, 3]
    assert g.findings == []
    aff = g.affine()
    np.testing.assert_allclose(aff[:3, 3], [10.0, -20.0, 0.0])
    np.testing.assert_allclose(np.diag(aff)[:3], [0.5, 0.5, 2.0])


@pytest.mark.req("REQ-ACQ-009")
def test_gap_is_a_refusal_with_where_and_size() -> None:
    g = analyse_stack(_stack([0.0, 2.0, 4.0, 10.0, 12.0, 14.0]))
    gap = next(f for f in g.findings if f.code == "slice_gap")
    assert gap.severity == Severity.REFUSAL
    assert gap.requirement == "REQ-ACQ-009"
    assert gap.details["gaps"][0]["after"] == 2
    assert gap.details["gaps"][0]["size_mm"] == pytest.approx(6.0)
    assert gap.details["gaps"][0]["missing"] == 2
    assert not g.regular


@pytest.mark.req("REQ-ACQ-010")
def test_uneven_spacing_is_a_refusal() -> None:
    g = analyse_stack(_stack([0.0, 2.0, 4.0, 5.2, 7.2, 9.2]))
    codes = {f.code: f for f in g.findings}
    assert "variable_spacing" in codes and "slice_gap" not in codes
    assert codes["variable_spacing"].severity == Severity.REFUSAL


@pytest.mark.req("REQ-ACQ-011")
def test_duplicate_positions_are_found_and_first_kept() -> None:
    g = analyse_stack(_stack([0.0, 2.0, 2.0, 4.0]))
    dup = next(f for f in g.findings if f.code == "duplicate_position")
    assert dup.details["count"] == 1
    assert g.order == [0, 1, 3] and g.duplicates == [2]


@pytest.mark.req("REQ-ACQ-012")
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_tilt_angle_and_sign(sign: float) -> None:
    # Columns run along -z tilted: the GE/Philips head geometry of dcm_qa_ct, mirrored for sign = -1.
    angle = np.radians(18.5)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -sign * np.sin(angle))
    g = analyse_stack(_stack([0.0, 5.0, 10.0, 15.0], iop=iop), gantry_tag_deg=sign * 18.5)
    tilt = next(f for f in g.findings if f.code == "gantry_tilt")
    assert tilt.severity == Severity.REFUSAL
    assert tilt.details["angle_deg"] == pytest.approx(sign * 18.5, abs=0.01)
    assert g.tilt_deg == pytest.approx(sign * 18.5, abs=0.01)
    # the in-plane offset grows along the column direction, in rows (j), none along i
    assert abs(g.inplane_offsets[-1, 0]) < 1e-9 and abs(g.inplane_offsets[-1, 1]) > 1.0


def test_oblique_stack_without_shear_is_not_tilted() -> None:
    angle = np.radians(30.0)
    r = np.array([1.0, 0.0, 0.0])
    c = np.array([0.0, np.cos(angle), -np.sin(angle)])
    n = np.cross(r, c)
    insts = [Instance(Path(f"s{k}"), f"1.{k}", None, tuple(float(x) for x in (k * 3.0 * n)),  # type: ignore[arg-type]
                      (*r, *c), {"pixel_spacing": (1.0, 1.0)}) for k in range(5)]
    g = analyse_stack(insts)
    assert g.findings == [] and g.tilt_deg == 0.0
    np.testing.assert_allclose(g.affine()[:3, 2], 3.0 * n, atol=1e-9)


def test_regular_grid_weights() -> None:
    targets, weights = regular_grid(np.array([0.0, 2.0, 4.0, 10.0]), 2.0)
    np.testing.assert_allclose(targets, [0, 2, 4, 6, 8, 10])
    assert (weights[3].lower, weights[3].upper) == (2, 3)
    assert weights[3].weight_upper == pytest.approx(1 / 3)
    assert weights[5].lower == weights[5].upper == 3


@pytest.mark.req("REQ-ACQ-008")
def test_bits_stored_sign_extension_and_mask() -> None:
    tags = {"bits_stored": 12}
    signed = np.array([0x0FFF, 0x0800, 0x07FF], dtype=np.int16)  # 12-bit two's complement: -1, -2048, 2047
    np.testing.assert_array_equal(_fits_bits(signed, tags), [-1, -2048, 2047])
    unsigned = np.array([0xF123], dtype=np.uint16)  # overlay bits above bit 12 are not pixel data
    np.testing.assert_array_equal(_fits_bits(unsigned, tags), [0x0123])


@pytest.mark.req("REQ-ACQ-008")
def test_rescale_per_slice_to_hu() -> None:
    stored = [np.array([[0, 1000]], dtype=np.uint16), np.array([[0, 1000]], dtype=np.uint16)]
    layout = {"bits_allocated": 16, "bits_stored": 12, "pixel_representation": 0, "samples_per_pixel": 1,
              "transfer_syntax": "1.2.840.10008.1.2.1"}
    insts = _stack([0.0, 1.0], tags=layout)
    insts = [Instance(i.path, i.sop_instance_uid, None, i.position, i.orientation,
                      {**i.tags, "slope": 1.0, "intercept": inter}) for i, inter in zip(insts, (-1024.0, -1000.0),
                                                                                        strict=True)]
    hu = rescale(stored, insts)
    assert hu.dtype == np.int16
    np.testing.assert_array_equal(hu, [[[-1024, -24]], [[-1000, 0]]])
    insts2 = [Instance(i.path, i.sop_instance_uid, None, i.position, i.orientation,
                       {**i.tags, "slope": 0.5, "intercept": 1.0}) for i in insts]
    real = rescale(stored, insts2)
    assert real.dtype == np.float32
    np.testing.assert_allclose(real[1], [[1.0, 501.0]])
