"""Consent walk-through: approvers decide in Slack, the bot hands out the admin-consent link and proves the result."""
