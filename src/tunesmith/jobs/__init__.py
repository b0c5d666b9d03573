"""Journeys that chain stages: the identity journey, the pipeline, and later distill → train → eval.

A job may import any stage (data, synth, train, eval, export, infer, serve); no stage ever
imports a job (tests/test_architecture.py walks the imports and fails on such an arrow).
"""
