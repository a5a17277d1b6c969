"""FGR (fine-grained reward) data building: photos, degradation, SR sources, masks, labels, builder."""
