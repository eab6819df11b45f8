from django.apps import AppConfig


class PaddockConfig(AppConfig):
    name = "paddock"
    verbose_name = "Paddock project"
