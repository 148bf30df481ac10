"""core: the run configuration, registries, file helpers and the shipped templates; imports nothing else of studylib."""
