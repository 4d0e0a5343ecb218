"""Batch serving: score files in resumable chunks, and watch a directory to score each new file once."""
