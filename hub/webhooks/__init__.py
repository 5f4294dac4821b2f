"""Webhooks: signed HTTP POSTs that tell a tenant's back office what its screens did."""
