"""tunesmith.eval"""
