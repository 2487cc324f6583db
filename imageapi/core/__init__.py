"""The imageapi library: no typer, no aiohttp. The CLI and the server are thin layers over it."""
