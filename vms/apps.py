from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        # Importing at ready(): the module needs the models, which load after the app config.
        from . import domain_events

        domain_events.register()
