"""AI insights about photos: model backends, the tool loop, conversations and daily summaries."""
