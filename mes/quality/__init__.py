"""Quality: SPC control limits, capability and run rules (pure), for data collection plans and
the automatic actions (OCAP) built on them."""
