"""Other tools' configs and flags, read as they are: LLaMA-Factory YAMLs (``lf``: the key tables
and the translation; ``run``: running a translated YAML; ``recipe``: ``tunesmith convert-recipe``
and the docs table) and ms-swift's self-cognition flags (``swift``).

A shared piece above the stages, like cli.py: it reads stage schemas lazily and the LLaMA-Factory
dataset mapping from ``data.registry``; no stage imports it.
"""
