"""Trainers: thin loops over the pure functions of the other packages."""
