"""Filtering: spam and virus checks, lists, rate limits, and the user's feedback."""
