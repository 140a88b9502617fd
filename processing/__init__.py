"""unitcoder's stages and the modules they share (see processing/README.md)."""
