"""Websocket routes (live events, consoles) are added by the live-panel work."""

websocket_urlpatterns: list = []
