"""The version of the package, at the bottom of the house so any module may read it without importing the package face."""

__version__ = "0.1.0"
