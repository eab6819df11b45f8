from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        # What the core must know of VMs (panel imports no app): see panel.registry.
        from panel import registry

        from . import domain_events, registrations, services

        registry.register_lockable(*registrations.LOCKABLE)
        registry.register_conflict(*registrations.CONFLICTS)
        registry.subscriptions.register("vms", registrations.visible_vms)
        registry.subscriptions.register("vms.current", registrations.current_vms)
        registry.state_labels.register("vm", registrations.STATE_LABELS)
        registry.tenant_reports.register("usage", registrations.tenant_usage)
        registry.register_task_titles(services.TASK_TITLES)
        # Domain events and the sync step of hosts (hosts imports no vms): see hosts.hooks.
        domain_events.register()
