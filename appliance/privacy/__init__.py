"""Privacy: the box secret, PS3.15 Annex E de-identification and retention."""
