"""Accounts, roles, authentication (OAuth2 password flow, API tokens) and e-signatures."""
