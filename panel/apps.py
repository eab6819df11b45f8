from django.apps import AppConfig


class PanelConfig(AppConfig):
    name = "panel"
    verbose_name = "Paddock panel"

    def ready(self):
        from .security import _connect_lockout_log

        _connect_lockout_log()
