"""Build-time tools of the source checkout (not shipped): generators of checked-in artefacts."""
