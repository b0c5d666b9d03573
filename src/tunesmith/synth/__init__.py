"""tunesmith.synth"""
