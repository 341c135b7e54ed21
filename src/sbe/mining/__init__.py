"""Offline negative mining: PCA features, k nearest neighbours of other identities, difficulty bands."""
