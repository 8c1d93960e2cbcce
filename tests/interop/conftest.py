"""The simulator fixtures (shelf cache, PKI folder) shared with the interop tests."""

from ..equipment_sims.conftest import pki_dir, shelf_dir

__all__ = ["pki_dir", "shelf_dir"]
