from django.apps import AppConfig


class TuningConfig(AppConfig):
    name = "tuning"
    verbose_name = "Tuning"

    def ready(self) -> None:
        from . import registrations

        registrations.register()
