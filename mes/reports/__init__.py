"""Reports that read several domains (equipment figures from tool history, lots and routes)."""
