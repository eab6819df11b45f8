# Console tickets (vms/console_models.py).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('vms', '0003_vcpus_hotplugged'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ConsoleTicket',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('token_hash', models.CharField(editable=False, max_length=64, unique=True)),
                ('kind', models.CharField(choices=[('vnc', 'VNC display'), ('serial', 'Serial console')], max_length=8)),
                ('created', models.DateTimeField()),
                ('expires', models.DateTimeField(db_index=True)),
                ('used_at', models.DateTimeField(blank=True, null=True)),
                ('alive_at', models.DateTimeField(blank=True, null=True)),
                ('closed_at', models.DateTimeField(blank=True, null=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='console_tickets', to=settings.AUTH_USER_MODEL)),
                ('vm', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='console_tickets', to='vms.virtualmachine')),
            ],
            options={
                'ordering': ['-created'],
                'indexes': [models.Index(fields=['vm', 'kind', 'closed_at'], name='consoleticket_session')],
            },
        ),
    ]
