"""Tenant readiness: read what a tenant has really granted the ITDR app, and say exactly what is missing."""
