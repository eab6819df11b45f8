"""Enumerations of the panel room: tenant roles and task states."""

from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Tenant admin"
    OPERATOR = "operator", "Operator"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class TaskState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_TASK_STATES = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)
