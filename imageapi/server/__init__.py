"""The HTTP server (`imageapi serve`): aiohttp over the same core as the CLI."""
