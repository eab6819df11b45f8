"""API routes of VMs under /api/ (registered on the API's router by paddock.api_urls).

``routes`` are (prefix, viewset, basename) for the router; ``urlpatterns`` are plain routes.
"""

from .views import VirtualMachineViewSet

routes = (("vms", VirtualMachineViewSet, "vm"),)

urlpatterns: list = []
