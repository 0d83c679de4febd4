"""Synthetic HEp-2 IIF fields with masks and labels."""
