"""What each stage is configured with and how much it computes, without torch.

A module here holds a stage's (or a shared layer's) config dataclasses, the names of the files it
writes (``SIDECARS``) and its ``work(...)`` estimate; the module of the same name one level up
holds the code that runs it and re-exports these names. Reading a config, parsing the Snakefile
and ``missingu plan`` import only this package (and numpy), never torch: a dry run, and the
Snakemake process each SLURM job starts, skip torch's seconds of import.
"""
