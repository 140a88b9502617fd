"""The pipeline's work as batch functions: a dict of columns in, a dict of columns out.

A step knows nothing of engines: ``datasets.map(batched=True)``, the local chunked engine
and Ray Data's ``map_batches`` can all run it. Long-lived resources (the sandbox pool,
the generator) are passed in as keyword arguments by whatever runs the step.
"""
