"""tunesmith.export"""
