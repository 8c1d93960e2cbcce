"""Release planning: start plans per product and fab, and the releaser that starts their lots."""
