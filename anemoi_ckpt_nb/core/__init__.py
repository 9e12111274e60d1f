"""Headless logic. Nothing here imports IPython, ipywidgets, graphviz or the notebook package."""
