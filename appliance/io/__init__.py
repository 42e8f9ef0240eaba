"""File formats at the edge of the box (NIfTI and friends); conversion LPS <-> RAS happens here."""
