"""Differential-privacy accounting shared by the sites and the trainer."""
