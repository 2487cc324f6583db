"""imageapi: a self-hosted photo and video library server and command-line toolkit."""

__version__ = "0.1.0"
