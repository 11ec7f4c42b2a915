"""Flowdeck's performance suite: each scenario beside the same work in plain SQL."""
