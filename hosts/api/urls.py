"""API routes of hosts, pools, volumes and networks under /api/ (registered on the API's router
by paddock.api_urls).

``routes`` are (prefix, viewset, basename) for the router; ``urlpatterns`` are plain routes.
"""

from .views import HostViewSet, NetworkViewSet, StoragePoolViewSet, VolumeViewSet

routes = (
    ("hosts", HostViewSet, "host"),
    ("storage-pools", StoragePoolViewSet, "storagepool"),
    ("volumes", VolumeViewSet, "volume"),
    ("networks", NetworkViewSet, "network"),
)

urlpatterns: list = []
