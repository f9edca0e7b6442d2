"""Build backends: each turns a recipe target into a layer tree (python/, lib/, bin/)."""
