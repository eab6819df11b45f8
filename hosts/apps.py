from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hosts"

    def ready(self):
        # What the core must know of hosts (panel imports no app): see panel.registry.
        from panel import registry

        from . import plan_steps, registrations, services  # noqa: F401 - plan_steps registers steps

        registry.register_lockable(*registrations.LOCKABLE)
        registry.task_error_formatters.register("libvirt", registrations.task_error_message)
        registry.worker_queues.register("hosts", registrations.host_queues)
        registry.subscriptions.register("hosts", registrations.visible_hosts)
        registry.subscriptions.register("hosts.current", registrations.current_hosts)
        registry.tree_sections.register("hosts", "ui:tree_hosts")
        registry.tenant_reports.register("placement", registrations.tenant_placement)
        registry.register_task_titles(services.TASK_TITLES)
